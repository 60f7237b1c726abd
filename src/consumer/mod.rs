pub(crate) mod watermark;
