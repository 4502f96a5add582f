//! The bus's own tables as sea-orm entities: the columns every statement of this crate names, the
//! row types rows are decoded into, and the one stored spelling of each status.

pub(crate) mod inbox;
pub(crate) mod outbox;
