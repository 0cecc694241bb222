//! Hardware providers, each written against its documented interface.
