//! `#[kafkactor::handler(topic = "orders", group = "billing", ...)]`: a
//! subscription declared on the async function that handles it.
//!
//! The attribute turns
//!
//! ```ignore
//! #[kafkactor::handler(topic = "orders", group = "billing", concurrency = 8)]
//! async fn on_order(d: Delivery<Order>) -> Result<(), Failure> { .. }
//! ```
//!
//! into a unit struct `on_order` whose `on_order::call(d)` is the function
//! as written, and which declares its subscription
//! (`kafkactor::DeclaredHandler`): `Subscription::to("orders")
//! .group("billing").concurrency(8)`, the same builder calls a user would
//! write. Every other `name = value` becomes `.name(value)`, a bare `name`
//! becomes `.name()`, and `name(a, b)` becomes `.name(a, b)`, so every
//! option of `Subscription` is reachable and a misspelt one is a compile
//! error at its name. Registration is explicit:
//! `Kafkactor::builder().handler(on_order)`.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{quote, quote_spanned};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, FnArg, ItemFn, Meta, PathArguments, Token, Type};

/// Declares the subscription an async handler function serves; see the
/// crate documentation.
#[proc_macro_attribute]
pub fn handler(args: TokenStream, item: TokenStream) -> TokenStream {
    let item = TokenStream2::from(item);
    match expand(args.into(), item.clone()) {
        Ok(tokens) => tokens.into(),
        // The function as written beside the error: nothing else fails
        // because it is missing.
        Err(e) => {
            let error = e.to_compile_error();
            quote!(#error #item).into()
        }
    }
}

fn expand(args: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let options = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args.clone())?;
    let function: ItemFn = syn::parse2(item)?;
    let message = check_signature(&function)?;

    let mut topic: Option<Expr> = None;
    let mut group: Option<Expr> = None;
    let mut calls = Vec::new();
    for option in &options {
        let name = option.path();
        let Some(ident) = name.get_ident() else {
            return Err(syn::Error::new(
                name.span(),
                "expected an option of Subscription: `concurrency = 8`, `transactional`, ..",
            ));
        };
        match (ident.to_string().as_str(), option) {
            ("topic" | "topics", Meta::NameValue(nv)) => {
                if topic.replace(nv.value.clone()).is_some() {
                    return Err(syn::Error::new(ident.span(), "the topic is given twice"));
                }
            }
            ("group", Meta::NameValue(nv)) => {
                if group.replace(nv.value.clone()).is_some() {
                    return Err(syn::Error::new(ident.span(), "the group is given twice"));
                }
            }
            ("topic" | "topics" | "group", _) => {
                return Err(syn::Error::new(
                    option.span(),
                    format!("`{ident}` takes a value: `{ident} = \"..\"`"),
                ))
            }
            (_, Meta::NameValue(nv)) => {
                let value = &nv.value;
                calls.push(quote_spanned!(ident.span()=> .#ident(#value)));
            }
            (_, Meta::Path(_)) => calls.push(quote_spanned!(ident.span()=> .#ident())),
            (_, Meta::List(list)) => {
                let arguments = &list.tokens;
                calls.push(quote_spanned!(ident.span()=> .#ident(#arguments)));
            }
        }
    }
    let span = if args.is_empty() {
        Span::call_site()
    } else {
        args.span()
    };
    let topic = topic
        .ok_or_else(|| syn::Error::new(span, "a handler needs its topic: `topic = \"orders\"`"))?;
    let group = group.ok_or_else(|| {
        syn::Error::new(
            span,
            "a handler needs its consumer group: `group = \"billing\"`",
        )
    })?;

    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    let name = &sig.ident;
    // An answer that is no outcome is an error at the return type.
    let call = quote_spanned!(sig.output.span()=> #name::call);
    let mut call_sig = sig.clone();
    call_sig.ident = syn::Ident::new("call", sig.ident.span());
    let doc = format!(
        "The handler `{name}` of `Delivery<{}>`, with the subscription its \
         `#[kafkactor::handler]` attribute declares: register it with \
         `.handler({name})`, call it with `{name}::call(delivery)`.",
        quote!(#message).to_string().replace(' ', "")
    );
    Ok(quote! {
        #[doc = #doc]
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, Default)]
        #vis struct #name;

        impl #name {
            #(#attrs)*
            #vis #call_sig #block
        }

        impl ::kafkactor::DeclaredHandler for #name {
            fn subscription(&self) -> ::kafkactor::Subscription {
                ::kafkactor::Subscription::to(#topic).group(#group) #(#calls)*
            }

            fn register<B: ::kafkactor::Subscriber>(
                self,
                builder: B,
                subscription: ::kafkactor::Subscription,
            ) -> B {
                builder.handle(subscription, #call)
            }
        }
    })
}

/// Checks that `function` is `async fn name(d: Delivery<T>) -> ..`, with no
/// generics or receiver, and returns `T`.
fn check_signature(function: &ItemFn) -> syn::Result<Type> {
    let sig = &function.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span(),
            "a handler is an `async fn`: `async fn on_order(d: Delivery<Order>) -> Result<(), Failure>`",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "a handler has no generic parameters: its message type is decoded by name",
        ));
    }
    let argument = match (sig.inputs.len(), sig.inputs.first()) {
        (1, Some(FnArg::Typed(argument))) => argument,
        (_, Some(FnArg::Receiver(receiver))) => {
            return Err(syn::Error::new(
                receiver.span(),
                "a handler is a free function, not a method",
            ))
        }
        _ => {
            let span = if sig.inputs.is_empty() {
                sig.ident.span()
            } else {
                sig.inputs.span()
            };
            return Err(syn::Error::new(
                span,
                "a handler takes one argument, its `Delivery<T>`: `async fn on_order(d: Delivery<Order>)`",
            ));
        }
    };
    delivery_of(&argument.ty).ok_or_else(|| {
        syn::Error::new(
            argument.ty.span(),
            "a handler's argument is a `Delivery<T>` (`kafkactor::Delivery`)",
        )
    })
}

/// `T` of a type `Delivery<T>` (by any path ending in `Delivery`).
fn delivery_of(ty: &Type) -> Option<Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Delivery" {
        return None;
    }
    match &last.arguments {
        PathArguments::AngleBracketed(args) if args.args.len() == 1 => match &args.args[0] {
            syn::GenericArgument::Type(t) => Some(t.clone()),
            _ => None,
        },
        _ => None,
    }
}
