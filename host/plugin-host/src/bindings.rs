//! `bindgen!` output for the `corvid:plugin` world. Private: no wasmtime type leaves the crate.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "plugin",
    imports: {
        "corvid:plugin/dns": async | trappable,
        default: trappable,
    },
    exports: { default: async },
    with: {
        "corvid:plugin/message.message": crate::message::HostMessage,
    },
});
