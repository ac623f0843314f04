//! FLV tags (H.264 video, AAC audio) remuxed into MPEG-TS, without any IO.
