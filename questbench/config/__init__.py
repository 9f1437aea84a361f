"""Configuration: suites, settings, model specs and the catalogues of corruptions, attacks and attention kinds, validated and named. No torch."""
