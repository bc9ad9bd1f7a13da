//! Name lookup for the identifier check.
use crate::Schema;
#[derive(Debug)]
pub(crate) struct NameIndex;
impl NameIndex {
    pub(crate) fn new(_s: &Schema) -> Self {
        NameIndex
    }
}
