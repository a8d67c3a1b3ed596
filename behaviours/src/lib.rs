//! libp2p behaviours of Constella.
