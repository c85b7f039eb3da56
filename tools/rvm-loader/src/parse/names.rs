//! Checks of the names and paths the adapter's files carry.

use crate::diag::{quote, Diagnostic};
use crate::limits;
use crate::model::PartitionName;

/// A partition name at `path` of `file`.
pub fn partition_name(file: &str, path: &str, s: &str) -> Result<PartitionName, Diagnostic> {
    if s == rvm_witness_host::log_folder::HYPERVISOR_NAME {
        return Err(Diagnostic::field(
            file,
            path,
            format!(
                "{} is reserved: the hypervisor's own witness log is filed as {s}.log",
                quote(s)
            ),
        ));
    }
    PartitionName::new(s).map_err(|e| {
        Diagnostic::field(
            file,
            path,
            format!("{} is not a safe identifier: it {e}", quote(s)),
        )
    })
}

/// An npm package name: optional `@scope/`, lower-case letters, digits and
/// `-._~`, at most 214 bytes (npm's rules).
pub fn package_name(file: &str, path: &str, s: &str) -> Result<(), Diagnostic> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && !p.starts_with('_')
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._~".contains(&b))
    };
    let ok = s.len() <= limits::PACKAGE_NAME_MAX
        && match s.strip_prefix('@') {
            Some(rest) => match rest.split_once('/') {
                Some((scope, name)) => part_ok(scope) && part_ok(name),
                None => false,
            },
            None => part_ok(s),
        };
    if ok {
        Ok(())
    } else {
        Err(Diagnostic::field(
            file,
            path,
            format!("{} is not a valid npm package name", quote(s)),
        ))
    }
}

/// An exact version `MAJOR.MINOR.PATCH[-pre][+build]`.
pub fn exact_version(file: &str, path: &str, s: &str) -> Result<(), Diagnostic> {
    let core_end = s.find(['-', '+']).unwrap_or(s.len());
    let (core, tail) = s.split_at(core_end);
    let nums: Vec<&str> = core.split('.').collect();
    let ok = s.len() <= limits::VERSION_MAX
        && nums.len() == 3
        && nums
            .iter()
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        && tail
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-+.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Diagnostic::field(
            file,
            path,
            format!("{} is not an exact version (MAJOR.MINOR.PATCH)", quote(s)),
        ))
    }
}

/// A relative path inside a package: `/`-separated components of
/// `[A-Za-z0-9._@+-]`, none empty, `.` or `..`.
pub fn package_path(file: &str, path: &str, s: &str) -> Result<(), Diagnostic> {
    let ok = !s.is_empty()
        && s.len() <= limits::ENTRYPOINT_MAX
        && s.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(Diagnostic::field(
            file,
            path,
            format!("{} is not a relative path inside the package", quote(s)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npm_names() {
        for good in [
            "@metaharness/kernel",
            "left-pad",
            "@ruvector/rvf-wasm",
            "a.b_c~d",
        ] {
            assert!(package_name("f", "p", good).is_ok(), "{good}");
        }
        for bad in [
            "", "@x", "@/x", "Upper", "a b", "../x", "@a/b/c", ".hidden", "@x/",
        ] {
            assert!(package_name("f", "p", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_hypervisors_log_name_is_reserved() {
        let e = partition_name("m.toml", "partition.name", "hypervisor").unwrap_err();
        assert_eq!(
            e.to_string(),
            "m.toml: partition.name: \"hypervisor\" is reserved: the hypervisor's own witness log is filed as hypervisor.log"
        );
        assert!(partition_name("m.toml", "partition.name", "hypervisor-2").is_ok());
    }

    #[test]
    fn versions() {
        for good in ["0.1.0", "10.20.30", "1.0.0-rc.1", "1.0.0+build.5"] {
            assert!(exact_version("f", "p", good).is_ok(), "{good}");
        }
        for bad in ["", "1.0", "^0.2.0", "1.0.0/..", "a.b.c", "1..0"] {
            assert!(exact_version("f", "p", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths() {
        assert!(package_path("f", "p", "pkg/ruflo_kernel_wasm.js").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a//b", "a/./b", "a\\b", "a b"] {
            assert!(package_path("f", "p", bad).is_err(), "{bad}");
        }
    }
}
