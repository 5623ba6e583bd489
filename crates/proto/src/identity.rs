//! The user a call is made for, in gRPC metadata. The gateway's gRPC edge sets these after it
//! has checked the caller's bearer token, and drops whatever a client sent under the same
//! names; the services behind it hold the call to that user's roles and projects. A call
//! without them comes from inside the cluster.

/// The user's name, UTF-8 (a binary header: base64 on the wire, any name fits).
pub const USER_HEADER: &str = "x-turbo-user-bin";
/// The user's roles, comma-separated: `viewer`, `developer`, `admin`.
pub const ROLES_HEADER: &str = "x-turbo-roles";

/// The user and roles a request names, when it names a user.
pub fn user_of<T>(request: &tonic::Request<T>) -> Option<(String, Vec<String>)> {
    let name = request.metadata().get_bin(USER_HEADER)?.to_bytes().ok()?;
    let name = String::from_utf8(name.to_vec()).ok()?.trim().to_string();
    if name.is_empty() {
        return None;
    }
    let roles = request
        .metadata()
        .get(ROLES_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(',')
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .collect();
    Some((name, roles))
}

/// Names `user` with `roles` in `metadata`, replacing whatever named someone before.
pub fn set_user(metadata: &mut tonic::metadata::MetadataMap, user: &str, roles: &[&str]) {
    metadata.remove_bin(USER_HEADER);
    metadata.remove(ROLES_HEADER);
    metadata.insert_bin(USER_HEADER, tonic::metadata::MetadataValue::from_bytes(user.as_bytes()));
    if let Ok(value) = roles.join(",").parse() {
        metadata.insert(ROLES_HEADER, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_name_round_trips_and_an_absent_or_empty_one_is_none() {
        let mut request = tonic::Request::new(());
        assert_eq!(user_of(&request), None);
        set_user(request.metadata_mut(), "Mallory", &["admin"]);
        set_user(request.metadata_mut(), "Zoë Ölund", &["developer", "admin"]);
        assert_eq!(user_of(&request), Some(("Zoë Ölund".into(), vec!["developer".into(), "admin".into()])));
        let mut empty = tonic::Request::new(());
        set_user(empty.metadata_mut(), " ", &["admin"]);
        assert_eq!(user_of(&empty), None);
    }
}
