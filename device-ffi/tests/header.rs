//! `include/mqseal.h` is generated from this crate by cbindgen and committed;
//! this test fails when it has drifted from the code. To regenerate it:
//! `scripts/mqseal-header` (runs this test with MQSEAL_BLESS_HEADER=1).

use std::path::PathBuf;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn header_path() -> PathBuf {
    crate_dir().parent().expect("workspace root").join("include/mqseal.h")
}

fn generate() -> Vec<u8> {
    let dir = crate_dir();
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("read cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    out
}

#[test]
fn the_committed_header_is_what_cbindgen_makes_of_the_code() {
    let fresh = generate();
    let path = header_path();
    if std::env::var_os("MQSEAL_BLESS_HEADER").is_some() {
        std::fs::write(&path, &fresh).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    if committed != fresh {
        let tmp = std::env::temp_dir().join("mqseal.h.generated");
        std::fs::write(&tmp, &fresh).ok();
        panic!(
            "{} has drifted from device-ffi/src (the regenerated header is in {}; `diff {} {}`); \
             run scripts/mqseal-header and commit the result",
            path.display(),
            tmp.display(),
            path.display(),
            tmp.display()
        );
    }
}
