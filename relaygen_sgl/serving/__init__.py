"""The relay server: OpenAI-compatible and SGLang-native routes in front of two runtimes."""
