//! The versioned messages between agent and server (JSON text frames).
