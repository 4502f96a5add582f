//! Checks on what clients send, each answering with a message that says what to fix.

use std::collections::HashSet;
use std::sync::LazyLock;

use crate::error::AuthError;

/// The longest email accepted (RFC 5321's path limit less the angle brackets).
pub const MAX_EMAIL_CHARS: usize = 254;
const MAX_LOCAL_PART_CHARS: usize = 64;
/// ASVS 4.0 2.1.1: at least 12 characters, counted after runs of spaces are made one.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The longest password accepted: enough for any passphrase, and a bound on the work a request
/// can ask Argon2 for.
pub const MAX_PASSWORD_CHARS: usize = 128;
/// The longest token accepted in a header or body; ours are far shorter.
pub const MAX_TOKEN_CHARS: usize = 4096;

/// The email as stored and compared: trimmed and lowercased. Checks presence and length only;
/// [`validate_new_email`] checks the form too.
pub fn normalize_email(email: &str) -> Result<String, AuthError> {
    let email = email.trim();
    if email.is_empty() {
        return Err(AuthError::InvalidRequest("email must not be empty".into()));
    }
    if email.chars().count() > MAX_EMAIL_CHARS {
        return Err(AuthError::InvalidRequest(format!(
            "email must be at most {MAX_EMAIL_CHARS} characters"
        )));
    }
    Ok(email.to_lowercase())
}

/// Checks the form of an email being registered: `local@domain.tld`, ASCII, no spaces or quoting,
/// a domain of dot-separated labels of letters, digits and inner hyphens.
pub fn validate_new_email(normalized: &str) -> Result<(), AuthError> {
    let invalid = |why: &str| {
        Err(AuthError::InvalidEmail(format!(
            "email is not valid: {why}"
        )))
    };
    let Some((local, domain)) = normalized.split_once('@') else {
        return invalid("it has no `@`");
    };
    if domain.contains('@') {
        return invalid("it has more than one `@`");
    }
    if local.is_empty() || local.len() > MAX_LOCAL_PART_CHARS {
        return invalid("the part before `@` must be 1 to 64 characters");
    }
    let local_ok = local
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    if !local_ok || local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return invalid("the part before `@` holds characters or dots that are not allowed");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return invalid("the domain needs a dot, as in example.com");
    }
    for label in &labels {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return invalid("the domain is not a valid host name");
        }
    }
    Ok(())
}

/// Checks presence and length of a password at log-in: anything longer cannot be a password of
/// ours, and is refused before any hashing work.
pub fn check_password_bounds(password: &str) -> Result<(), AuthError> {
    if password.is_empty() {
        return Err(AuthError::InvalidRequest(
            "password must not be empty".into(),
        ));
    }
    if password.chars().count() > MAX_PASSWORD_CHARS {
        return Err(AuthError::InvalidRequest(format!(
            "password must be at most {MAX_PASSWORD_CHARS} characters"
        )));
    }
    Ok(())
}

/// Common passwords no account may have: Django 5.2.19's `common-passwords.txt` (from the PyPI
/// package `django`, BSD-3-Clause; about 20,000 passwords collected by Royce Williams, lowercased
/// and deduplicated), bundled unchanged. Provenance and licence: `common-passwords.LICENSE`.
static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("common-passwords.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect()
});

/// How long a password counts as: its characters, with every run of whitespace as one.
fn counted_chars(password: &str) -> usize {
    let mut count = 0;
    let mut in_space = false;
    for c in password.chars() {
        let space = c.is_whitespace();
        if !(space && in_space) {
            count += 1;
        }
        in_space = space;
    }
    count
}

/// Checks a new password as ASVS 4.0 level 2 asks (2.1.1, 2.1.7, 2.1.9): at least 12 characters
/// (runs of spaces count as one), any characters and no composition rules, not on the list of
/// common passwords (compared lowercased and trimmed), and not built on the email's local part.
pub fn validate_new_password(password: &str, normalized_email: &str) -> Result<(), AuthError> {
    check_password_bounds(password)?;
    let weak = |why: &str| {
        Err(AuthError::WeakPassword(format!(
            "password is too weak: {why}"
        )))
    };
    if counted_chars(password) < MIN_PASSWORD_CHARS {
        return weak("use at least 12 characters (a few words make a good one)");
    }
    if COMMON_PASSWORDS.contains(password.trim().to_lowercase().as_str()) {
        return weak("it is on a list of common passwords; choose another");
    }
    let local = normalized_email.split('@').next().unwrap_or("");
    if local.chars().count() >= 3 && password.to_lowercase().contains(local) {
        return weak("do not build it on your email address");
    }
    Ok(())
}

/// Checks a presented token's length; content is the verifier's business.
pub fn check_token_bounds(token: &str, what: &str) -> Result<(), AuthError> {
    if token.trim().is_empty() {
        return Err(AuthError::InvalidRequest(format!(
            "{what} must not be empty"
        )));
    }
    if token.len() > MAX_TOKEN_CHARS {
        return Err(AuthError::InvalidRequest(format!(
            "{what} must be at most {MAX_TOKEN_CHARS} characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<(), AuthError>) -> &'static str {
        r.map_or_else(|e| e.code(), |()| "ok")
    }

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(
            normalize_email("  Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
        assert_eq!(
            normalize_email("   ").unwrap_err().code(),
            "invalid_request"
        );
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(
            normalize_email(&long).unwrap_err().code(),
            "invalid_request"
        );
        for good in [
            "ada@example.com",
            "a.b+tag@mail.example.co.uk",
            "x_1@a-b.io",
        ] {
            assert_eq!(code(validate_new_email(good)), "ok", "{good}");
        }
        for bad in [
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a@b@c.com",
            "a b@example.com",
            ".ada@example.com",
            "a..b@example.com",
            "ada@-x.com",
            "ada@x..com",
            "adä@example.com",
            "ada@exa mple.com",
        ] {
            assert_eq!(code(validate_new_email(bad)), "invalid_email", "{bad}");
        }
    }

    #[test]
    fn passwords_are_checked() {
        let email = "ada@example.com";
        assert_eq!(code(validate_new_password("correct horse 9", email)), "ok");
        // No composition rules: letters alone, or any script, are fine at 12 characters.
        for good in ["onlylettershere", "пароль-длинный", "1234 9876 5555"] {
            assert_eq!(code(validate_new_password(good, email)), "ok", "{good}");
        }
        assert_eq!(code(validate_new_password("", email)), "invalid_request");
        let huge = "a1".repeat(MAX_PASSWORD_CHARS);
        assert_eq!(code(validate_new_password(&huge, email)), "invalid_request");
        for weak in [
            "short1!",
            "elevenchars",
            "a          bcdefghij",
            "password1234",
            " Password1234 ",
            "QWERTYUIOP[]",
            "ADA-is-great-1",
        ] {
            assert_eq!(
                code(validate_new_password(weak, email)),
                "weak_password",
                "{weak}"
            );
        }
    }
}
