//! Configuration: the TOML file a user writes, validated into typed settings.
