//! Behaviour tests of the session.
