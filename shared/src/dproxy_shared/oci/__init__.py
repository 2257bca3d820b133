"""The registry vocabulary: media types, digests, references and error codes, in one place."""
