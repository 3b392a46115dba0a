// Browser audio (whatever MediaRecorder made: WebM/Opus, OGG/Opus, MP4/AAC) -> 16 kHz mono 16-bit WAV, with the
// Web Audio API, so the server decodes recordings with the same soundfile path as every upload.
"use strict";

(function () {
  const RATE = 16000;

  // Mix to mono and resample to 16 kHz with an OfflineAudioContext (the browser's own resampler).
  async function resample(buffer) {
    const frames = Math.max(1, Math.ceil(buffer.duration * RATE));
    const ctx = new OfflineAudioContext(1, frames, RATE);
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(ctx.destination);
    source.start();
    const rendered = await ctx.startRendering();
    return rendered.getChannelData(0);
  }

  // Cut the silence before and after the speech (20 ms frames quieter than a tenth of the loudest frame's RMS),
  // keeping 50 ms on each side: the demo model was trained on tightly cut clips, and half a second of silence
  // around a short sentence moved its translation from rank 1 to rank 20.
  function trimSilence(samples, rate) {
    const frame = Math.round(rate * 0.02);
    const count = Math.floor(samples.length / frame);
    if (count < 3) return samples;
    const rms = new Float32Array(count);
    for (let f = 0; f < count; f++) {
      let sum = 0;
      for (let i = f * frame; i < (f + 1) * frame; i++) sum += samples[i] * samples[i];
      rms[f] = Math.sqrt(sum / frame);
    }
    const threshold = Math.max(1e-3, 0.1 * Math.max(...rms));
    let first = 0;
    while (first < count && rms[first] < threshold) first++;
    let last = count - 1;
    while (last > first && rms[last] < threshold) last--;
    const keep = Math.round(rate * 0.05);
    const start = Math.max(0, first * frame - keep);
    const end = Math.min(samples.length, (last + 1) * frame + keep);
    return end - start >= rate * 0.3 ? samples.subarray(start, end) : samples;
  }

  // float32 samples in [-1, 1] -> a RIFF/WAVE file, PCM 16-bit little-endian, one channel.
  function encodeWav(samples, rate) {
    const view = new DataView(new ArrayBuffer(44 + samples.length * 2));
    const text = (offset, s) => { for (let i = 0; i < s.length; i++) view.setUint8(offset + i, s.charCodeAt(i)); };
    text(0, "RIFF");
    view.setUint32(4, 36 + samples.length * 2, true);
    text(8, "WAVE");
    text(12, "fmt ");
    view.setUint32(16, 16, true);       // fmt chunk size
    view.setUint16(20, 1, true);        // PCM
    view.setUint16(22, 1, true);        // channels
    view.setUint32(24, rate, true);
    view.setUint32(28, rate * 2, true); // bytes per second
    view.setUint16(32, 2, true);        // block align
    view.setUint16(34, 16, true);       // bits per sample
    text(36, "data");
    view.setUint32(40, samples.length * 2, true);
    for (let i = 0; i < samples.length; i++) {
      const x = Math.max(-1, Math.min(1, samples[i]));
      view.setInt16(44 + i * 2, x < 0 ? x * 0x8000 : x * 0x7fff, true);
    }
    return new Blob([view], { type: "audio/wav" });
  }

  // Decode a recorded Blob: { wav: Blob (16 kHz mono, silence trimmed), seconds: recorded, kept: seconds sent }.
  async function toWav16k(blob) {
    const data = await blob.arrayBuffer();
    const ctx = new AudioContext();
    let decoded;
    try {
      decoded = await ctx.decodeAudioData(data);
    } finally {
      ctx.close();
    }
    const samples = await resample(decoded);
    const speech = trimSilence(samples, RATE);
    return { wav: encodeWav(speech, RATE), seconds: samples.length / RATE, kept: speech.length / RATE };
  }

  window.MinerWav = { toWav16k, encodeWav, trimSilence, RATE };
})();
