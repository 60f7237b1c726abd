//! [`Strategy`], which children restart when one of them exits.

/// Which children restart when one of them exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Only the child that exited.
    #[default]
    OneForOne,
    /// Every child: the others are stopped in reverse order, then all start again.
    OneForAll,
    /// The child that exited and every child declared after it.
    RestForOne,
}
