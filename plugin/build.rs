//! Generates Rust bindings from the broker's installed headers.
use std::env;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let wrapper = manifest.join("../include/mosquitto_plugin_bindings.h");
    println!("cargo:rerun-if-changed={}", wrapper.display());
    // The header directory: Debian's by default; MQSEAL_MOSQUITTO_INCLUDE points at
    // another broker's installed headers (e.g. one built by scripts/brokers). The
    // plugin we ship is built against 2.0.11's, the oldest we support.
    println!("cargo:rerun-if-env-changed=MQSEAL_MOSQUITTO_INCLUDE");
    let include_dir = env::var_os("MQSEAL_MOSQUITTO_INCLUDE")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/include"));
    for header in ["mosquitto.h", "mosquitto_broker.h", "mosquitto_plugin.h", "mosquitto/broker.h"] {
        println!("cargo:rerun-if-changed={}", include_dir.join(header).display());
    }
    // 2.1's headers live in mosquitto/ (the old names are shims). With them,
    // src/broker_api.rs checks its hand-written 2.1 declarations against the
    // generated ones at compile time.
    println!("cargo::rustc-check-cfg=cfg(mqseal_headers_2_1)");
    if include_dir.join("mosquitto/broker.h").exists() {
        println!("cargo:rustc-cfg=mqseal_headers_2_1");
    }

    let bindings = bindgen::Builder::default()
        .header(wrapper.to_string_lossy())
        .clang_arg(format!("-I{}", include_dir.display()))
        // What the plugin uses: broker functions, event structs, constants.
        .allowlist_function("mosquitto_(callback_register|callback_unregister|log_printf|client_id|client_username|client_protocol_version|client_clean_session|kick_client_by_clientid|kick_client_by_username|broker_publish|malloc|free|plugin_set_info)")
        .allowlist_type("mosquitto_(evt_.*|opt|plugin_id_t)")
        .allowlist_type("mosq_err_t|mosquitto_plugin_event")
        .allowlist_var("MOSQ_(ACL|LOG)_.*")
        .rustified_enum("mosquitto_plugin_event")
        .constified_enum_module("mosq_err_t")
        .derive_default(false)
        .layout_tests(true)
        .generate()
        .unwrap_or_else(|e| {
            panic!(
                "bindgen could not read the Mosquitto headers ({e}). Install them with \
                 `apt-get install mosquitto-dev libmosquitto-dev libclang-dev` (scripts/setup does)."
            )
        });
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("mosquitto_bindings.rs");
    bindings.write_to_file(out).expect("write bindings");
}
