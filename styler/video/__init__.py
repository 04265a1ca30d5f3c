"""`styler video`'s capability: its options (options), steady frames from frame to frame (steadiness), and one video
file decoded, stylized and encoded with its sound (transcode)."""
