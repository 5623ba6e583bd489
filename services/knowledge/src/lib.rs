//! turbo-knowledge
