//! The generated bindings of the `corvid:plugin` package's `plugin-with-context` world (the
//! `plugin` world plus facts on demand; from `wit/` at the repository root).
//!
//! Plugin authors rarely need this module: the types are re-exported at the crate root and
//! the host imports are wrapped in [`crate::host`].
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    path: "../../wit",
    world: "plugin-with-context",
    pub_export_macro: true,
    export_macro_name: "__export_plugin_world",
    default_bindings_module: "::corvid_plugin_sdk::bindings",
    runtime_path: "::corvid_plugin_sdk::__wit_bindgen_rt",
    additional_derives: [PartialEq],
});
