//! turbo-gateway
