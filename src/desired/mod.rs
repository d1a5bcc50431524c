//! The pure compute: Services + EndpointSlices + Node + config -> desired state.
