//! Consuming: the commit watermark and the supervision subtree of a subscription.

pub(crate) mod tree;
pub(crate) mod watermark;
