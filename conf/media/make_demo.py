"""Regenerate the demo programmes in this folder (needs espeak-ng and ffmpeg).

Each is a two-note chime followed by a short Vietnamese announcement spoken by
espeak-ng, encoded as 24 kb/s Ogg/Opus: small, and ours to license (CC0).
Run: python conf/media/make_demo.py
"""

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile

HERE = Path(__file__).resolve().parent
RATE = 48000
PROGRAMMES = {
    "demo-xa-an-binh.ogg": "Đài truyền thanh xã An Bình xin kính chào bà con. "
                           "Đây là chương trình phát thử nghiệm của hệ thống truyền thanh ứng dụng công nghệ thông tin.",
    "demo-xa-tan-hoa.ogg": "Đài truyền thanh xã Tân Hòa thông báo. "
                           "Mời bà con chú ý theo dõi bản tin thời tiết và lịch tiêm phòng cho gia súc.",
}


def chime() -> np.ndarray:
    t = np.arange(int(0.45 * RATE)) / RATE
    envelope = np.exp(-t * 6.0)
    notes = [0.3 * envelope * np.sin(2 * np.pi * f * t) for f in (880.0, 659.25)]
    return np.concatenate([notes[0], notes[1], np.zeros(int(0.3 * RATE))])


def speech(text: str, workdir: Path) -> np.ndarray:
    wav = workdir / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "vi", "-s", "150", "-w", str(wav), text], check=True)
    data, rate = soundfile.read(wav, dtype="float32")
    import soxr
    return soxr.resample(data, rate, RATE) * 0.9


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for name, text in PROGRAMMES.items():
            audio = np.concatenate([chime(), speech(text, workdir), np.zeros(int(1.5 * RATE))]).astype(np.float32)
            raw = workdir / "programme.wav"
            soundfile.write(raw, audio, RATE)
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(raw), "-c:a", "libopus", "-b:a", "24k",
                            "-metadata", "title=" + name, str(HERE / name)], check=True)
            print(name, f"{audio.size / RATE:.1f} s")


if __name__ == "__main__":
    main()
