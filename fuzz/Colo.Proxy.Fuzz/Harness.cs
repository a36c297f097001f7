using System.Buffers.Binary;

namespace Colo.Proxy.Fuzz;

/// <summary>Thrown by the harness when the proxy broke one of its documented guarantees (see docs/FUZZING.md).</summary>
internal sealed class InvariantViolationException(string message) : Exception(message);

/// <summary>A clock that only moves when the harness says so (deterministic runs). One tick = 1 µs.</summary>
internal sealed class FakeTime : TimeProvider
{
    public long Now = 1_000_000_000;

    public override long TimestampFrequency => 1_000_000;

    public override long GetTimestamp() => Now;
}

/// <summary>
/// The single interpretation of a fuzz input (format in docs/FUZZING.md and <see cref="Op"/>):
/// byte 0 configures the engine and rewriter; the rest is a sequence of records, each an op byte (low 3 bits: op,
/// high 5 bits: argument) followed, for frame ops, by a 2-byte big-endian length and the frame bytes (a length past
/// the end takes what is left). Every call into the proxy is checked against its documented guarantees; a broken one
/// throws <see cref="InvariantViolationException"/>, any other exception is the proxy's own.
/// </summary>
internal static class Harness
{
    /// <summary>Record op codes (low 3 bits of the op byte).</summary>
    public enum Op : byte
    {
        /// <summary>[len][frame] → OnPvmFrame.</summary>
        Pvm = 0,
        /// <summary>[len][frame] → OnSvmFrame.</summary>
        Svm = 1,
        /// <summary>[len][frame] → copy, RewriteFromSvm, OnSvmFrame. Arg bit 0: fix the TCP checksum first.</summary>
        SvmRewritten = 2,
        /// <summary>[len][frame] → copy, RewriteFromClient (client → SVM direction). Arg bit 0: fix the TCP checksum first.</summary>
        Client = 3,
        /// <summary>[len][frame] → the same frame from both VMs. Arg bit 0: SVM first; bit 1: SVM copy through RewriteFromSvm; bits 2–4 = k: flip a bit of the SVM copy's k-th last byte.</summary>
        Both = 4,
        /// <summary>Clock: advance by StepsMicros[arg &amp; 7], OnTick; arg bit 3: rewriter.Expire(); bit 4: a second OnTick.</summary>
        Time = 5,
        /// <summary>Checkpoint: arg &amp; 3 = 0 commit now, 1 MarkCheckpoint, 2 commit the last mark, 3 mark-or-commit; bit 2: keep the rewriter's offsets; bit 3: failover replay (drain the unacknowledged SVM output) instead.</summary>
        Checkpoint = 6,
        /// <summary>Mode: arg &amp; 3 = 0 toggle PassThrough, 1 toggle rewriter LearnOffsets, 2 read counters, 3 rewriter.Expire().</summary>
        Mode = 7,
    }

    public const int MaxRecords = 1024;

    /// <summary>Clock steps in µs: 0, 1 ms, 10 ms, 100 ms, 999 ms, 1 s, 11 s, 11 min (the compare timeout is 1 s or 10 ms).</summary>
    private static readonly long[] StepsMicros = [0, 1_000, 10_000, 100_000, 999_000, 1_000_000, 11_000_000, 660_000_000];

    // Scratch for rewritten copies: a whole input (AFL's inputs are at most 1 MiB) or one record's frame.
    private static readonly byte[] Copy = new byte[(1 << 20) + 64];
    private static readonly byte[] Before = new byte[(1 << 20) + 64];
    private static readonly ExceptionRecorder Recorder = new();

    /// <summary>Statistics of the last run (for --replay).</summary>
    public static long LastRecords, LastPvmFrames, LastSvmFrames, LastMatched, LastBadFrames, LastRewritten, LastCheckpointRequests;

    /// <summary>Runs one input. Throws on a crash or a broken guarantee.</summary>
    /// <param name="data">Buffer holding the input.</param>
    /// <param name="length">Input length.</param>
    public static void Run(byte[] data, int length)
    {
        Recorder.Arm();
        try
        {
            RunCore(data, length);
        }
        finally
        {
            Recorder.Disarm();
        }
    }

    private static void RunCore(byte[] data, int length)
    {
        ReadOnlySpan<byte> input = data.AsSpan(0, length);

        // 1. The parser on the whole input, and the rewriter (both directions) on copies of it.
        CheckParse(input);
        var time = new FakeTime();
        var wholeRw = new SequenceRewriter(time);
        RewriteChecked(wholeRw, input, fromClient: false, fixChecksum: false);
        RewriteChecked(wholeRw, input, fromClient: true, fixChecksum: false);
        if (length == 0)
        {
            return;
        }

        // 2. The compare engine and a rewriter fed the records.
        byte config = input[0];
        var options = new CompareOptions
        {
            MaxHeldBytes = (config & 3) switch { 0 => 64L << 20, 1 => 16384, 2 => 2048, _ => 300 },
            MaxHeldBytesPerConnection = (config & 3) switch { 0 => 16L << 20, 1 => 8192, 2 => 1024, _ => 200 },
            MaxConnections = ((config >> 2) & 3) switch { 0 => 65536, 1 => 16, 2 => 4, _ => 1 },
            MaxOutOfOrderSegments = (config & 0x10) != 0 ? 2 : 64,
            CompareTimeout = TimeSpan.FromMilliseconds((config & 0x40) != 0 ? 10 : 1000),
        };
        var sink = new CheckingSink(data);
        var engine = new CompareEngine(options, sink, time);
        var rw = new SequenceRewriter(time, maxConnections: (config & 0x20) != 0 ? 2 : 65536);
        // The secondary's copy of the SVM's unacknowledged TCP output (replayed at failover), tight bounds with config bit 5.
        UnackedOutputOptions unackedOptions = (config & 0x20) != 0
            ? new UnackedOutputOptions { MaxBytes = 4096, MaxBytesPerConnection = 2048, MaxConnections = 2 }
            : new UnackedOutputOptions();
        var unacked = new UnackedOutput(unackedOptions);
        if ((config & 0x80) != 0)
        {
            engine.PassThrough = true;
        }
        CheckMark mark = default;
        int pos = 1;
        int records = 0;
        while (pos < length && records < MaxRecords)
        {
            records++;
            byte opByte = input[pos++];
            var op = (Op)(opByte & 7);
            int arg = opByte >> 3;
            int frameOffset = 0, frameLength = 0;
            if (op <= Op.Both)
            {
                int want = pos + 2 <= length ? BinaryPrimitives.ReadUInt16BigEndian(input.Slice(pos, 2)) : int.MaxValue;
                pos = Math.Min(pos + 2, length);
                frameOffset = pos;
                frameLength = Math.Min(want, length - pos);
                pos += frameLength;
            }
            ReadOnlySpan<byte> frame = input.Slice(frameOffset, frameLength);
            switch (op)
            {
                case Op.Pvm:
                    CheckParse(frame);
                    sink.AddPvm(frameOffset, frameLength);
                    engine.OnPvmFrame(frame);
                    break;
                case Op.Svm:
                    CheckParse(frame);
                    engine.OnSvmFrame(frame);
                    break;
                case Op.SvmRewritten:
                    {
                        ReadOnlySpan<byte> svm = RewriteChecked(rw, frame, fromClient: false, fixChecksum: (arg & 1) != 0);
                        unacked.OnSvmFrame(svm, translated: (arg & 2) == 0);
                        CheckUnacked(unacked, unackedOptions.MaxBytes);
                        engine.OnSvmFrame(svm);
                        break;
                    }
                case Op.Client:
                    unacked.OnClientFrame(frame);
                    CheckUnacked(unacked, unackedOptions.MaxBytes);
                    RewriteChecked(rw, frame, fromClient: true, fixChecksum: (arg & 1) != 0);
                    break;
                case Op.Both:
                    {
                        CheckParse(frame);
                        ReadOnlySpan<byte> svm = frame;
                        int k = (arg >> 2) & 7;
                        if ((arg & 2) != 0)
                        {
                            svm = RewriteChecked(rw, frame, fromClient: false, fixChecksum: false);
                        }
                        if (k != 0 && k <= frameLength)
                        {
                            if ((arg & 2) == 0)
                            {
                                frame.CopyTo(Copy);
                                svm = Copy.AsSpan(0, frameLength);
                            }
                            Copy[frameLength - k] ^= 0x01;
                        }
                        if ((arg & 1) != 0)
                        {
                            engine.OnSvmFrame(svm);
                            Check(engine, sink, op, "OnSvmFrame");
                        }
                        sink.AddPvm(frameOffset, frameLength);
                        engine.OnPvmFrame(frame);
                        if ((arg & 1) == 0)
                        {
                            Check(engine, sink, op, "OnPvmFrame");
                            engine.OnSvmFrame(svm);
                        }
                        break;
                    }
                case Op.Time:
                    time.Now += StepsMicros[arg & 7];
                    engine.OnTick();
                    if ((arg & 8) != 0)
                    {
                        rw.Expire();
                    }
                    if ((arg & 16) != 0)
                    {
                        engine.OnTick();
                    }
                    break;
                case Op.Checkpoint:
                    if ((arg & 8) != 0)
                    {
                        DrainUnacked(unacked);
                        break;
                    }
                    unacked.Clear();
                    if (engine.PassThrough)
                    {
                        break; // unprotected: no checkpoints
                    }
                    switch (arg & 3)
                    {
                        case 0:
                            engine.OnCheckpointCommitted();
                            mark = default;
                            sink.NewEpoch();
                            break;
                        case 1:
                            mark = new CheckMark(engine.MarkCheckpoint());
                            break;
                        case 2:
                        case 3:
                            if (mark.Valid)
                            {
                                engine.OnCheckpointCommitted(mark.Mark);
                                mark = default;
                                sink.NewEpoch();
                            }
                            else if ((arg & 3) == 3)
                            {
                                mark = new CheckMark(engine.MarkCheckpoint());
                            }
                            break;
                    }
                    if ((arg & 4) == 0)
                    {
                        rw.ResetAfterCheckpoint();
                    }
                    break;
                case Op.Mode:
                    switch (arg & 3)
                    {
                        case 0:
                            engine.PassThrough = !engine.PassThrough;
                            mark = default; // the engine forgets its marks
                            sink.NewEpoch();
                            break;
                        case 1:
                            rw.LearnOffsets = !rw.LearnOffsets;
                            break;
                        case 2:
                            ReadCounters(engine);
                            break;
                        default:
                            rw.Expire();
                            break;
                    }
                    break;
            }
            Check(engine, sink, op, null);
        }

        // 3. A final commit must release every PVM frame ever handed in, each exactly once.
        if (!engine.PassThrough)
        {
            engine.OnCheckpointCommitted();
            Check(engine, sink, Op.Checkpoint, "final OnCheckpointCommitted");
        }
        if (sink.Released != sink.PvmCount || engine.Counters.HeldFrames != 0)
        {
            throw new InvariantViolationException(
                $"after the final commit {sink.Released} of {sink.PvmCount} PVM frames were released, {engine.Counters.HeldFrames} still held");
        }
        LastRecords = records;
        LastPvmFrames = sink.PvmCount;
        LastSvmFrames = engine.Counters.SvmFrames;
        LastMatched = engine.Counters.MatchedFrames;
        LastBadFrames = engine.Counters.PvmBadFrames + engine.Counters.SvmBadFrames;
        LastRewritten = rw.RewrittenFrames;
        LastCheckpointRequests = engine.Counters.TotalCheckpointRequests;
    }

    private static void ReadCounters(CompareEngine engine)
    {
        CompareCounters c = engine.Counters;
        long total = c.TotalCheckpointRequests + c.MatchedBytes + c.PeakHeldBytes + c.Flows + c.Connections;
        foreach (KeyValuePair<string, long> kv in c.BadFramesByKind)
        {
            if (kv.Value <= 0)
            {
                throw new InvariantViolationException($"BadFramesByKind lists {kv.Key} with count {kv.Value}");
            }
            total += kv.Value;
        }
        if (total < 0 || engine.ConnectionCount < 0)
        {
            throw new InvariantViolationException("negative counters");
        }
        _ = engine.LastCause?.Length;
    }

    /// <summary>Checks the engine after every call: no swallowed exception, counters consistent with the sink.</summary>
    private static void Check(CompareEngine engine, CheckingSink sink, Op op, string? stage)
    {
        CompareCounters c = engine.Counters;
        if (c.InternalErrors == 0 && sink.Violation is null && c.ReleasedFrames == sink.Released && c.PvmFrames == sink.PvmCount &&
            c.HeldFrames == sink.PvmCount - sink.Released && c.HeldBytes >= 0)
        {
            return;
        }
        string what = stage ?? "record " + op;
        if (c.InternalErrors != 0)
        {
            throw new InvariantViolationException(
                $"the engine caught an exception of its own during {what} (InternalErrors={c.InternalErrors}):\n{Recorder.Describe()}");
        }
        if (sink.Violation is { } v)
        {
            throw new InvariantViolationException($"during {what}: {v}");
        }
        if (c.ReleasedFrames != sink.Released || c.PvmFrames != sink.PvmCount || c.HeldFrames != sink.PvmCount - sink.Released)
        {
            throw new InvariantViolationException(
                $"after {what}: counters PvmFrames={c.PvmFrames} ReleasedFrames={c.ReleasedFrames} HeldFrames={c.HeldFrames}, " +
                $"sink saw {sink.PvmCount} in, {sink.Released} released");
        }
        if (c.HeldBytes < 0)
        {
            throw new InvariantViolationException($"after {what}: HeldBytes={c.HeldBytes}");
        }
    }

    /// <summary>Parses a frame and checks that a successful parse describes regions inside the frame.</summary>
    private static void CheckParse(ReadOnlySpan<byte> frame)
    {
        bool ok = PacketView.TryParse(frame, out PacketView v, out BadFrameKind kind);
        if (ok != (kind == BadFrameKind.None))
        {
            throw new InvariantViolationException($"TryParse returned {ok} with kind {kind}");
        }
        if (!ok)
        {
            return;
        }
        int n = frame.Length;
        Require(v.L3Offset >= PacketView.EthernetHeaderLength && v.L3Offset <= n, "L3 offset outside the frame", in v);
        switch (v.Kind)
        {
            case PacketKind.Other:
                return;
            case PacketKind.Arp:
                Require(v.PayloadOffset >= v.L3Offset && v.PayloadLength >= 8 && v.PayloadOffset + v.PayloadLength <= n, "ARP outside the frame", in v);
                return;
        }
        int ipEnd = v.L3Offset + v.IpTotalLength;
        Require(v.IpTotalLength > 0 && ipEnd <= n, "IP packet outside the frame", in v);
        Require(v.L4Offset >= v.L3Offset + 20 && v.L4Offset <= ipEnd, "L4 offset outside the IP packet", in v);
        Require(v.PayloadOffset >= v.L3Offset && v.PayloadLength >= 0 && v.PayloadOffset + v.PayloadLength <= ipEnd, "payload outside the IP packet", in v);
        if (v.IsTcp)
        {
            Require(v.TcpHeaderLength >= 20 && v.L4Offset + v.TcpHeaderLength == v.PayloadOffset && v.PayloadOffset + v.PayloadLength == ipEnd,
                "TCP header/payload bounds inconsistent", in v);
            Require(v.SackBlockCount == 0 || (v.SackOffset >= v.L4Offset + 22 && v.SackOffset + 8 * v.SackBlockCount <= v.PayloadOffset),
                "SACK blocks outside the TCP header", in v);
            Require(v.TimestampOptionOffset == 0 || (v.TimestampOptionOffset >= v.L4Offset + 20 && v.TimestampOptionOffset + 10 <= v.PayloadOffset),
                "timestamp option outside the TCP header", in v);
            _ = v.TcpSegment.Length + v.Payload.Length + v.IpPacket.Length;
        }
        else if (v.Kind is PacketKind.Udp or PacketKind.Udp6)
        {
            Require(v.PayloadOffset == v.L4Offset + 8, "UDP payload not after its header", in v);
            _ = v.Payload.Length + v.IpPacket.Length;
        }
        else
        {
            _ = v.Payload.Length + v.IpPacket.Length;
        }
    }

    private static void Require(bool condition, string what, in PacketView v)
    {
        if (!condition)
        {
            throw new InvariantViolationException(
                $"parser: {what}: kind={v.Kind} frame={v.Frame.Length} l3={v.L3Offset} ipTotal={v.IpTotalLength} l4={v.L4Offset} " +
                $"tcpHdr={v.TcpHeaderLength} payload={v.PayloadOffset}+{v.PayloadLength} sack={v.SackOffset}x{v.SackBlockCount} ts={v.TimestampOptionOffset}");
        }
    }

    /// <summary>The unacknowledged-output store's bounds and counts hold: never over its byte bound, never negative.</summary>
    private static void CheckUnacked(UnackedOutput u, long maxBytes)
    {
        if (u.RetainedBytes < 0 || u.RetainedSegments < 0 || u.Connections < 0)
        {
            throw new InvariantViolationException($"UnackedOutput counts negative: {u.RetainedBytes} B, {u.RetainedSegments} segments, {u.Connections} connections");
        }
        if (u.RetainedBytes > maxBytes || u.PeakRetainedBytes > maxBytes)
        {
            throw new InvariantViolationException($"UnackedOutput over its bound: {u.RetainedBytes} (peak {u.PeakRetainedBytes}) > {maxBytes} B");
        }
        if ((u.RetainedSegments == 0) != (u.RetainedBytes == 0))
        {
            throw new InvariantViolationException($"UnackedOutput: {u.RetainedSegments} segments but {u.RetainedBytes} B");
        }
    }

    /// <summary>Failover replay: every replayed frame is a TCP segment with payload or FIN; the store is empty afterwards.</summary>
    private static void DrainUnacked(UnackedOutput u)
    {
        int segments = u.RetainedSegments;
        int written = 0;
        int n = u.DrainTo(f =>
        {
            written++;
            if (!PacketView.TryParse(f, out PacketView v, out _) || !v.IsTcp || (v.PayloadLength == 0 && (v.Flags & TcpFlags.Fin) == 0))
            {
                throw new InvariantViolationException("UnackedOutput replayed a frame that is not a TCP segment with payload or FIN");
            }
        });
        if (n != segments || written != segments || u.RetainedSegments != 0 || u.RetainedBytes != 0)
        {
            throw new InvariantViolationException($"UnackedOutput drain: {n} returned, {written} written, {segments} held, {u.RetainedSegments} left");
        }
    }

    /// <summary>
    /// Rewrites a copy of <paramref name="frame"/> (in <see cref="Copy"/>) and checks the rewriter's guarantees: non-TCP
    /// and malformed frames untouched; in a TCP frame only sequence, acknowledgement, SACK edges and checksum change; the
    /// frame parses the same afterwards; a correct TCP checksum stays correct.
    /// </summary>
    private static ReadOnlySpan<byte> RewriteChecked(SequenceRewriter rw, ReadOnlySpan<byte> frame, bool fromClient, bool fixChecksum)
    {
        int n = frame.Length;
        Span<byte> copy = Copy.AsSpan(0, n);
        frame.CopyTo(copy);
        bool ok = PacketView.TryParse(copy, out PacketView v, out BadFrameKind kind);
        if (ok && v.IsTcp && fixChecksum)
        {
            FixTcpChecksum(copy, in v);
        }
        bool checksumOk = ok && v.IsTcp && TcpChecksumOk(in v);
        PacketKind pk = v.Kind;
        int l4 = v.L4Offset, payloadOffset = v.PayloadOffset, sackOffset = v.SackOffset, sackEnd = v.SackOffset + 8 * v.SackBlockCount;
        copy.CopyTo(Before);

        if (fromClient)
        {
            rw.RewriteFromClient(copy);
        }
        else
        {
            rw.RewriteFromSvm(copy);
        }

        ReadOnlySpan<byte> before = Before.AsSpan(0, n);
        bool ok2 = PacketView.TryParse(copy, out PacketView v2, out BadFrameKind kind2);
        string dir = fromClient ? "RewriteFromClient" : "RewriteFromSvm";
        if (ok2 != ok || kind2 != kind || v2.Kind != pk)
        {
            throw new InvariantViolationException($"{dir} changed how the frame parses: {ok}/{kind}/{pk} -> {ok2}/{kind2}/{v2.Kind}");
        }
        if (!ok || !v.IsTcp)
        {
            if (!before.SequenceEqual(copy))
            {
                throw new InvariantViolationException($"{dir} modified a {(ok ? pk.ToString() : "malformed (" + kind + ")")} frame");
            }
            return copy;
        }
        for (int i = 0; i < n; i++)
        {
            if (before[i] == copy[i])
            {
                continue;
            }
            int r = i - l4;
            bool allowed = (r >= 4 && r < 12) || r == 16 || r == 17 || (i >= sackOffset && i < sackEnd && i < payloadOffset);
            if (!allowed)
            {
                throw new InvariantViolationException($"{dir} modified byte {i} (TCP header offset {r}) of a {pk} frame");
            }
        }
        if (checksumOk && !TcpChecksumOk(in v2))
        {
            throw new InvariantViolationException(
                $"{dir} broke a correct TCP checksum ({pk}, SACK at TCP offset {(v.SackBlockCount > 0 ? sackOffset - l4 : -1)} x{v.SackBlockCount})");
        }
        return copy;
    }

    private static ulong PseudoHeaderSum(in PacketView v, int segmentLength)
    {
        ulong sum = PacketView.ProtocolTcp + (ulong)segmentLength;
        if (v.Kind == PacketKind.Tcp6)
        {
            return Sum(v.Frame.Slice(v.L3Offset + 8, 32), sum);
        }
        return sum + (v.SrcIp >> 16) + (v.SrcIp & 0xFFFF) + (v.DstIp >> 16) + (v.DstIp & 0xFFFF);
    }

    private static bool TcpChecksumOk(in PacketView v)
    {
        ReadOnlySpan<byte> seg = v.Frame.Slice(v.L4Offset, v.L3Offset + v.IpTotalLength - v.L4Offset);
        return Fold(Sum(seg, PseudoHeaderSum(in v, seg.Length))) == 0xFFFF;
    }

    private static void FixTcpChecksum(Span<byte> frame, in PacketView v)
    {
        Span<byte> seg = frame.Slice(v.L4Offset, v.L3Offset + v.IpTotalLength - v.L4Offset);
        seg[16] = seg[17] = 0;
        BinaryPrimitives.WriteUInt16BigEndian(seg.Slice(16, 2), (ushort)~Fold(Sum(seg, PseudoHeaderSum(in v, seg.Length))));
    }

    internal static ulong Sum(ReadOnlySpan<byte> data, ulong sum)
    {
        int i = 0;
        for (; i + 1 < data.Length; i += 2)
        {
            sum += (ulong)(data[i] << 8 | data[i + 1]);
        }
        if (i < data.Length)
        {
            sum += (ulong)data[i] << 8;
        }
        return sum;
    }

    internal static ushort Fold(ulong sum)
    {
        while ((sum >> 16) != 0)
        {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }
        return (ushort)sum;
    }

    private readonly struct CheckMark(CheckpointMark mark)
    {
        public CheckpointMark Mark { get; } = mark;

        public bool Valid => Mark.Serial != 0;
    }

    /// <summary>
    /// Checks every release against the PVM frames handed in (byte-exact, each at most once) and every checkpoint
    /// request (an engine reason, at most once per reason per epoch). Never throws (the engine forbids it): records.
    /// </summary>
    private sealed class CheckingSink(byte[] input) : ICompareSink
    {
        private int[] _offsets = new int[64];
        private int[] _lengths = new int[64];
        private bool[] _released = new bool[64];
        private int _firstUnreleased;
        private readonly bool[] _requested = new bool[5];

        public int PvmCount { get; private set; }

        public int Released { get; private set; }

        public string? Violation { get; private set; }

        public void AddPvm(int offset, int length)
        {
            if (PvmCount == _offsets.Length)
            {
                Array.Resize(ref _offsets, PvmCount * 2);
                Array.Resize(ref _lengths, PvmCount * 2);
                Array.Resize(ref _released, PvmCount * 2);
            }
            _offsets[PvmCount] = offset;
            _lengths[PvmCount] = length;
            _released[PvmCount] = false;
            PvmCount++;
        }

        public void NewEpoch() => Array.Clear(_requested);

        public void Release(ReadOnlySpan<byte> frame)
        {
            for (int i = _firstUnreleased; i < PvmCount; i++)
            {
                if (!_released[i] && _lengths[i] == frame.Length && input.AsSpan(_offsets[i], _lengths[i]).SequenceEqual(frame))
                {
                    _released[i] = true;
                    Released++;
                    while (_firstUnreleased < PvmCount && _released[_firstUnreleased])
                    {
                        _firstUnreleased++;
                    }
                    return;
                }
            }
            Violation ??= $"released a {frame.Length}-byte frame that is not an unreleased PVM frame (duplicate or corrupted release)";
        }

        public void RequestCheckpoint(CheckpointReason reason)
        {
            if (reason is not (CheckpointReason.Mismatch or CheckpointReason.Timeout or CheckpointReason.QueueFull))
            {
                Violation ??= $"checkpoint requested for reason {reason}, which the engine never raises";
                return;
            }
            if (_requested[(int)reason])
            {
                Violation ??= $"checkpoint requested twice in one epoch for {reason}";
            }
            _requested[(int)reason] = true;
        }
    }

    /// <summary>Keeps the first exception thrown (even if caught) while armed, to report what the engine swallowed.</summary>
    private sealed class ExceptionRecorder
    {
        private bool _armed;
        private Exception? _first;

        public ExceptionRecorder() =>
            AppDomain.CurrentDomain.FirstChanceException += (_, e) =>
            {
                if (_armed && _first is null)
                {
                    _first = e.Exception;
                }
            };

        public void Arm()
        {
            _first = null;
            _armed = true;
        }

        public void Disarm() => _armed = false;

        public string Describe() => _first?.ToString() ?? "(no exception recorded)";
    }
}
