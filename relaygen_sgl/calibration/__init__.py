"""Offline cue calibration: traces -> teacher-forced margins -> cue statistics -> profile."""
