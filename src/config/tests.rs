//! The configuration's layers and every bad input, each a typed error
//! naming the key (with `figment::Jail`: a directory and environment of
//! the test's own).

// `figment::Jail` takes closures returning `figment::Error`, a large type.
#![allow(clippy::result_large_err)]

use figment::Jail;

use super::*;

const FILE_TEXT: &str = r#"
[default.brokers.main]
bootstrap = "file:9092"
topic_partitions = 6
[default.brokers.main.settings]
"linger.ms" = 5
"sasl.password" = "hunter2"
"enable.ssl.certificate.verification" = false

[default.brokers.local]
partitions = 2

[production.brokers.main]
bootstrap = "prod:9092"
"#;

/// Runs `check` in a jail holding `kafkactor.toml` with `text`.
fn with_file(text: &str, check: impl FnOnce(&mut Jail) -> figment::error::Result<()>) {
    Jail::expect_with(|jail| {
        jail.create_file(FILE, text)?;
        check(jail)
    });
}

fn config_error(result: Result<Config>) -> String {
    match result {
        Err(Error::Config(why)) => why,
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[test]
fn the_profile_is_over_the_file_and_the_environment_over_both() {
    with_file(FILE_TEXT, |jail| {
        let default = Config::load().unwrap();
        assert_eq!(
            default.brokers["main"].bootstrap.as_deref(),
            Some("file:9092")
        );
        assert_eq!(
            default.broker_names().collect::<Vec<_>>(),
            ["local", "main"]
        );

        jail.set_env(PROFILE_VAR, "production");
        let production = Config::load().unwrap();
        let main = &production.brokers["main"];
        assert_eq!(main.bootstrap.as_deref(), Some("prod:9092"));
        // What the profile does not say comes from `default`.
        assert_eq!(main.topic_partitions, Some(6));

        jail.set_env("KAFKACTOR_BROKERS__MAIN__BOOTSTRAP", "env:9092");
        let env = Config::load().unwrap();
        assert_eq!(env.brokers["main"].bootstrap.as_deref(), Some("env:9092"));
        // A profile asked for wins over KAFKACTOR_PROFILE.
        let asked = Config::load_from(Some(Path::new(FILE)), Some("default")).unwrap();
        assert_eq!(asked.brokers["main"].topic_partitions, Some(6));
        Ok(())
    });
}

#[test]
fn the_environment_alone_defines_brokers_and_other_variables_are_left_alone() {
    Jail::expect_with(|jail| {
        jail.set_env("KAFKACTOR_BROKERS__EDGE__BOOTSTRAP", "edge:9092");
        // The command's address and a test's variables are not configuration.
        jail.set_env("KAFKACTOR_BROKERS", "127.0.0.1:9092");
        jail.set_env("KAFKACTOR_TEST_BROKERS", "127.0.0.1:9092");
        let config = Config::load().unwrap();
        assert_eq!(config.broker_names().collect::<Vec<_>>(), ["edge"]);
        assert!(config.broker("edge").is_ok());
        Ok(())
    });
}

#[test]
fn settings_pass_through_and_secrets_are_hidden_when_shown() {
    with_file(FILE_TEXT, |_| {
        let config = Config::load().unwrap();
        let settings = &config.brokers["main"].settings;
        assert_eq!(settings["linger.ms"].to_string(), "5");
        assert_eq!(
            settings["enable.ssl.certificate.verification"].to_string(),
            "false"
        );
        let shown = config.to_string();
        assert!(shown.contains(r#""linger.ms" = "5""#), "{shown}");
        assert!(shown.contains(r#""sasl.password" = "***""#), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        Ok(())
    });
}

#[test]
fn an_unknown_key_is_named_with_its_file() {
    with_file(
        "[default.brokers.main]\nbootstrap = \"k:9092\"\nboostrap_servers = \"typo\"\n",
        |_| {
            let why = config_error(Config::load());
            assert!(why.contains("boostrap_servers"), "{why}");
            assert!(why.contains(FILE), "{why}");
            Ok(())
        },
    );
}

#[test]
fn a_value_of_the_wrong_type_is_named_with_its_key() {
    with_file("[default.brokers.local]\npartitions = \"three\"\n", |_| {
        let why = config_error(Config::load());
        assert!(why.contains("partitions"), "{why}");
        assert!(why.contains("three"), "{why}");
        Ok(())
    });
}

#[test]
fn a_missing_file_is_named() {
    Jail::expect_with(|_| {
        let why = config_error(Config::from_file("nowhere.toml"));
        assert!(why.contains("nowhere.toml"), "{why}");
        // Without a file, `load` reads the environment alone.
        assert_eq!(Config::load().unwrap().broker_names().count(), 0);
        Ok(())
    });
}

#[test]
fn a_broker_not_defined_is_an_error_listing_those_that_are() {
    with_file(FILE_TEXT, |_| {
        let why = config_error(
            Config::load()
                .unwrap()
                .broker("orders")
                .map(|_| unreachable!()),
        );
        assert!(why.contains("\"orders\""), "{why}");
        assert!(why.contains("local, main"), "{why}");
        Ok(())
    });
}

#[test]
fn a_table_outside_a_profile_is_refused() {
    with_file("[brokers.main]\nbootstrap = \"k:9092\"\n", |_| {
        let why = config_error(Config::load());
        assert!(why.contains("[default.brokers"), "{why}");
        Ok(())
    });
}

#[test]
fn what_cannot_make_a_broker_is_refused_by_key() {
    for (text, key) in [
        (
            "[default.brokers.a]\npartitions = 0\n",
            "brokers.a.partitions",
        ),
        (
            "[default.brokers.a]\nbootstrap = \" \"\n",
            "brokers.a.bootstrap",
        ),
        (
            "[default.brokers.a]\nbootstrap = \"k:9092\"\npartitions = 2\n",
            "brokers.a.partitions",
        ),
        (
            "[default.brokers.a.settings]\n\"linger.ms\" = 1\n",
            "brokers.a.settings",
        ),
    ] {
        with_file(text, |_| {
            let why = config_error(Config::load());
            assert!(why.contains(key), "{text}: {why}");
            Ok(())
        });
    }
}

#[test]
fn a_refused_setting_is_refused_when_the_broker_is_used() {
    with_file(
        "[default.brokers.a]\nbootstrap = \"k:9092\"\n[default.brokers.a.settings]\n\"enable.auto.commit\" = true\n",
        |_| {
            let broker = Config::load().unwrap().broker("a").unwrap();
            let why = match broker.backend() {
                Err(Error::Config(why)) => why,
                Err(e) => panic!("expected a configuration error, got {e}"),
                Ok(_) => panic!("enable.auto.commit=true was taken"),
            };
            assert!(why.contains("enable.auto.commit"), "{why}");
            Ok(())
        },
    );
}
