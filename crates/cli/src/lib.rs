//! turbo-coder
