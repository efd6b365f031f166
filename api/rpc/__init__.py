"""JSON-RPC 2.0 as VDSM speaks it: the codec, the verb tables and the front."""
