using System.Buffers;

namespace Colo.Proxy;

/// <summary>
/// Primary-side output comparator implementing the COLO output-commit rule: a PVM frame reaches the client only
/// when the SVM produced the same output (TCP: same payload bytes at the same sequence positions and at least the
/// same acknowledgement; non-TCP: same compare-relevant bytes) or when a checkpoint captured after the frame has been
/// committed on the secondary. Released frames are always the PVM's exact bytes.
/// </summary>
/// <remarks>
/// Not thread-safe: the caller serialises every call (one lock). <see cref="ICompareSink"/> callbacks run inside
/// these calls. After warm-up the per-frame path does not allocate (frames and stream bytes live in pooled buffers).
/// Design after QEMU net/colo-compare.c (per-connection queues, TCP compared by sequence range) but comparing TCP as
/// a byte stream so different segmentation on the two sides still matches. IPv4 and IPv6 (extension headers walked,
/// stacked VLAN tags skipped) take the same paths: TCP connections are keyed by 128-bit addresses (IPv4 mapped to
/// ::ffff:a.b.c.d). Non-TCP frames are paired first-in first-out per flow (kind, addresses, ports) and compared by the
/// parts that must agree: the UDP payload; the whole ICMP message; ICMPv6 type, code and everything after the checksum
/// (echo id/seq/data, neighbour-discovery target and options); the ARP packet; IP fragments and other IP protocols
/// byte-exact over the IP payload (IPv4 id, IPv6 fragment identification ignored); unknown ethertypes and malformed
/// frames byte-exact. IPv4 TTL/id/header checksum, IPv6 hop limit/flow label/traffic class and TCP/UDP/ICMPv6
/// checksums are never compared (the ICMP checksum only as part of its message).
/// </remarks>
public sealed partial class CompareEngine
{
    private const TcpFlags SynAckMask = TcpFlags.Syn | TcpFlags.Ack;

    private readonly CompareOptions _options;
    private readonly ICompareSink _sink;
    private readonly TimeProvider _time;
    private readonly long _timeoutTicks;
    private readonly long _lingerTicks;
    private readonly long _idleTicks;
    private readonly long _sweepTicks;
    private readonly Dictionary<ConnKey, TcpConnection> _conns;
    private readonly Dictionary<FlowKey, OtherFlow> _flows;
    private readonly Stack<HeldFrame> _framePool = new();
    private readonly Stack<TcpConnection> _connPool = new();
    private readonly Stack<OtherFlow> _flowPool = new();
    private FrameList _pvmHeld;
    private FrameList _svmHeld;
    private TcpConnection? _pendHead, _pendTail;
    private readonly bool[] _requested = new bool[5];
    private long _lastSweep;
    private long _nextOrdinal;
    private long _markSerial;
    private CheckpointMark _lastMark;
    private bool _passThrough;

    /// <summary>Creates an engine.</summary>
    /// <param name="options">Tuning; read once here.</param>
    /// <param name="sink">Receives released frames and checkpoint requests.</param>
    /// <param name="time">Clock; only <see cref="TimeProvider.GetTimestamp"/> and its frequency are used.</param>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A timeout or bound is not positive.</exception>
    public CompareEngine(CompareOptions options, ICompareSink sink, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(sink);
        ArgumentNullException.ThrowIfNull(time);
        if (options.CompareTimeout <= TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(options), "CompareTimeout must be positive.");
        }
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(options.MaxHeldBytes, "options.MaxHeldBytes");
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(options.MaxHeldBytesPerConnection, "options.MaxHeldBytesPerConnection");
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(options.MaxConnections, "options.MaxConnections");
        ArgumentOutOfRangeException.ThrowIfNegative(options.MaxOutOfOrderSegments, "options.MaxOutOfOrderSegments");
        _options = options;
        _sink = sink;
        _time = time;
        _timeoutTicks = ToTicks(options.CompareTimeout);
        _lingerTicks = ToTicks(options.ClosedConnectionLinger);
        _idleTicks = ToTicks(options.IdleConnectionTimeout);
        _sweepTicks = ToTicks(TimeSpan.FromSeconds(1));
        int initial = Math.Min(options.MaxConnections, 1024);
        _conns = new Dictionary<ConnKey, TcpConnection>(initial);
        _flows = new Dictionary<FlowKey, OtherFlow>(Math.Min(initial, 256));
        _lastSweep = time.GetTimestamp();
    }

    /// <summary>Counters (frames per side, matches, releases, held bytes, checkpoint requests, bad frames).</summary>
    public CompareCounters Counters { get; } = new();

    /// <summary>
    /// True: unprotected operation (before protection starts or after the secondary is lost) — PVM frames are released
    /// at once and SVM frames ignored. Setting it true releases everything held, in arrival order, and forgets all
    /// compare state; setting it false starts comparing afresh (connections are then treated as first seen mid-stream),
    /// so set it false only once the secondary has loaded a checkpoint of the PVM (re-protection). Setting the current
    /// value again does nothing.
    /// </summary>
    public bool PassThrough
    {
        get => _passThrough;
        set
        {
            if (value == _passThrough)
            {
                return;
            }
            if (value)
            {
                ReleaseAllHeld(passThrough: true);
            }
            ClearAllState();
            _passThrough = value;
        }
    }

    /// <summary>Number of TCP connections currently tracked.</summary>
    public int ConnectionCount => _conns.Count;

    /// <summary>Handles one PVM output frame: holds a pooled copy or releases it. Never throws.</summary>
    /// <param name="frame">The Ethernet frame as produced by the PVM.</param>
    public void OnPvmFrame(ReadOnlySpan<byte> frame)
    {
        Counters.pvmFrames++;
        Counters.pvmBytes += frame.Length;
        if (_passThrough)
        {
            Counters.releasedPassThrough++;
            Counters.releasedFrames++;
            _sink.Release(frame);
            return;
        }
        try
        {
            long now = _time.GetTimestamp();
            if (!PacketView.TryParse(frame, out PacketView v, out BadFrameKind bad))
            {
                Counters.pvmBadFrames++;
                Counters.badFrames[(int)bad]++;
                PvmOther(frame, BadFrameKey, new CompareRegion(0, frame.Length), now);
                return;
            }
            if (v.IsTcp)
            {
                PvmTcp(in v, now);
            }
            else
            {
                GetOtherKey(in v, out FlowKey key, out CompareRegion region);
                PvmOther(frame, key, in region, now);
            }
        }
        catch (Exception)
        {
            // Never throw out of the data path (a throwing sink, or a bug): count it.
            Counters.internalErrors++;
        }
    }

    /// <summary>Handles one SVM output frame (already rewritten into the PVM's TCP sequence space). Never throws.</summary>
    /// <param name="frame">The Ethernet frame as produced by the SVM.</param>
    public void OnSvmFrame(ReadOnlySpan<byte> frame)
    {
        Counters.svmFrames++;
        Counters.svmBytes += frame.Length;
        if (_passThrough)
        {
            Counters.svmIgnored++;
            return;
        }
        try
        {
            long now = _time.GetTimestamp();
            if (!PacketView.TryParse(frame, out PacketView v, out BadFrameKind bad))
            {
                Counters.svmBadFrames++;
                Counters.badFrames[(int)bad]++;
                SvmBad(frame);
                return;
            }
            if (v.IsTcp)
            {
                SvmTcp(in v, now);
            }
            else
            {
                GetOtherKey(in v, out FlowKey key, out CompareRegion region);
                SvmOther(frame, key, in region, now);
            }
        }
        catch (Exception)
        {
            Counters.internalErrors++;
        }
    }

    /// <summary>
    /// Periodic timer (call every 10–50 ms): requests a <see cref="CheckpointReason.Timeout"/> checkpoint (once per
    /// epoch) when anything held on either side is older than <see cref="CompareOptions.CompareTimeout"/>, and sweeps
    /// closed/idle connections about once a second.
    /// </summary>
    public void OnTick()
    {
        if (_passThrough)
        {
            return;
        }
        try
        {
            Tick();
        }
        catch (Exception)
        {
            // Never let a bug stop the timeout checks; counted (InternalErrors) and the next tick runs again.
            Counters.internalErrors++;
        }
    }

    private void Tick()
    {
        long now = _time.GetTimestamp();
        if (!_requested[(int)CheckpointReason.Timeout])
        {
            long oldest = long.MaxValue;
            if (_pvmHeld.Head is { } p)
            {
                oldest = p.Arrival;
            }
            if (_svmHeld.Head is { } s && s.Arrival < oldest)
            {
                oldest = s.Arrival;
            }
            if (_pendHead is { } c && c.PendingSince < oldest)
            {
                oldest = c.PendingSince;
            }
            if (oldest != long.MaxValue && now - oldest >= _timeoutTicks)
            {
                LastCause = DescribeTimeout(oldest);
                Request(CheckpointReason.Timeout);
            }
        }
        if (now - _lastSweep >= _sweepTicks)
        {
            _lastSweep = now;
            Sweep(now, force: _conns.Count > _options.MaxConnections);
        }
    }

    /// <summary>
    /// The secondary has loaded a checkpoint captured after every frame currently held: releases all held PVM frames
    /// in arrival order, drops SVM-side state, and restarts each connection's comparison at the PVM's current stream
    /// position (the SVM now has the PVM's TCP state). Re-arms the once-per-epoch checkpoint requests.
    /// Same as <c>OnCheckpointCommitted(MarkCheckpoint())</c>.
    /// </summary>
    public void OnCheckpointCommitted() => OnCheckpointCommitted(MarkCheckpoint());

    /// <summary>
    /// Records the output position of a checkpoint capture, for pipelined checkpoints where the PVM resumes (and
    /// produces output of the next epoch) before the secondary has loaded the checkpoint. Call it, under the same lock
    /// as every other call, after the PVM is stopped for capture and all its output up to the stop has been passed to
    /// <see cref="OnPvmFrame"/>. O(connections).
    /// </summary>
    /// <returns>The mark to pass to <see cref="OnCheckpointCommitted(CheckpointMark)"/>.</returns>
    public CheckpointMark MarkCheckpoint()
    {
        var mark = new CheckpointMark(++_markSerial, _nextOrdinal);
        foreach (KeyValuePair<ConnKey, TcpConnection> kv in _conns)
        {
            TcpConnection c = kv.Value;
            c.MarkSerial = mark.Serial;
            c.MarkEndSet = c.PvmMaxEndSet;
            c.MarkEnd = c.PvmMaxEnd;
            c.MarkAckSet = c.PvmAckSet;
            c.MarkAck = c.PvmMaxAck;
            c.MarkSyn = c.PvmSyn;
            c.MarkFinSet = c.PvmFinSet;
            c.MarkFinSeq = c.PvmFinSeq;
            c.MarkRst = c.PvmRst;
        }
        _lastMark = mark;
        return mark;
    }

    /// <summary>
    /// The secondary has loaded the checkpoint captured at <paramref name="mark"/>: releases, in arrival order, every
    /// held PVM frame that arrived before the mark; drops all SVM-side state (SVM output arriving after this call must
    /// come from the loaded SVM); restarts each connection's comparison at the PVM's stream position at the mark and
    /// re-compares PVM frames that arrived after the mark (they stay held, their timeout restarts now). Re-arms the
    /// once-per-epoch checkpoint requests.
    /// </summary>
    /// <param name="mark">The mark taken by the latest <see cref="MarkCheckpoint"/>.</param>
    /// <exception cref="ArgumentException"><paramref name="mark"/> is not the latest mark (a newer capture superseded it) or was already committed.</exception>
    public void OnCheckpointCommitted(CheckpointMark mark)
    {
        if (mark.Serial == 0 || mark != _lastMark)
        {
            throw new ArgumentException("Not the latest checkpoint mark.", nameof(mark));
        }
        _lastMark = default;
        Counters.commits++;
        long now = _time.GetTimestamp();
        HeldFrame? h;
        while ((h = _pvmHeld.Head) is not null && h.Ordinal < mark.Ordinal)
        {
            _pvmHeld.Remove(h);
            if (h.Owner is TcpConnection tc)
            {
                tc.Held.Dequeue();
                NoteReleased(tc, h);
            }
            else if (h.Owner is OtherFlow of)
            {
                of.Pvm.Dequeue();
            }
            Counters.releasedOnCheckpoint++;
            ReleaseAndReturn(h);
        }
        for (HeldFrame? r = _pvmHeld.Head; r is not null; r = r.GNext)
        {
            r.Arrival = now;
        }
        DropSvmHeld();
        foreach (KeyValuePair<ConnKey, TcpConnection> kv in _conns)
        {
            TcpConnection c = kv.Value;
            c.SvmOoo = default;
            c.SvmOooCount = 0;
            SubHeld(c.Ahead.Clear(), c);
            RemovePending(c);
            long closedAt = c.ClosedAt;
            c.ResetCompareState();
            c.ClosedAt = closedAt;
            bool marked = c.MarkSerial == mark.Serial;
            if (marked)
            {
                // The loaded SVM has the PVM's TCP state as of the mark.
                c.PvmAckSet = c.SvmAckSet = c.MarkAckSet;
                c.PvmMaxAck = c.SvmMaxAck = c.MarkAck;
                c.PvmSyn = c.SvmSyn = c.MarkSyn;
                c.PvmFinSet = c.SvmFinSet = c.MarkFinSet;
                c.PvmFinSeq = c.SvmFinSeq = c.MarkFinSeq;
                c.PvmRst = c.SvmRst = c.MarkRst;
            }
            // The compare base is the PVM position at the mark, or beyond it what already reached the client
            // (released after the mark by a match with the old SVM): SVM bytes below it are not compared again.
            bool baseSet = marked && c.MarkEndSet;
            uint b = c.MarkEnd;
            if (c.ReleasedEndSet && (!baseSet || SeqMath.Gt(c.ReleasedEnd, b)))
            {
                b = c.ReleasedEnd;
                baseSet = true;
            }
            if (baseSet)
            {
                c.PvmMaxEndSet = true;
                c.PvmMaxEnd = b;
                InitStream(c, b);
            }
            if (c.PvmSyn == TcpFlags.None)
            {
                c.PvmSyn = c.ReleasedSyn;
            }
            if (!c.Held.IsEmpty)
            {
                for (HeldFrame? f = c.Held.Head; f is not null; f = f.Next)
                {
                    f.NotAppended = false;
                }
                for (HeldFrame? f = c.Held.Head; f is not null; f = f.Next)
                {
                    ApplyPvm(c, f);
                }
                TryRelease(c, now);
            }
        }
        foreach (KeyValuePair<FlowKey, OtherFlow> kv in _flows)
        {
            OtherFlow fl = kv.Value;
            fl.Svm = default;
            if (fl.Pvm.IsEmpty)
            {
                _flows.Remove(kv.Key);
                _flowPool.Push(fl);
            }
        }
        Counters.flows = _flows.Count;
        Array.Clear(_requested);
    }

    // ---------------------------------------------------------------- TCP

    private void PvmTcp(in PacketView v, long now)
    {
        ConnKey key = new(v.SrcAddress, v.DstAddress, v.SrcPort, v.DstPort, v.IsIPv6);
        TcpConnection c = GetConn(key, now);
        bool syn = v.Has(TcpFlags.Syn);
        if (syn && c.ClosedAt != 0 && c.Held.IsEmpty)
        {
            ResetConn(c);
        }
        c.LastActivity = now;

        HeldFrame f = Hold(v.Frame, now, c);
        f.Seq = v.Seq;
        f.Ack = v.AckNumber;
        f.Flags = v.Flags;
        f.PayloadOffset = v.PayloadOffset;
        f.PayloadLength = v.PayloadLength;
        c.Held.Enqueue(f);
        ApplyPvm(c, f);
        TryRelease(c, now);
    }

    /// <summary>Applies a (held) PVM segment to the connection's PVM-side state and stream.</summary>
    private void ApplyPvm(TcpConnection c, HeldFrame f)
    {
        TcpFlags fl = f.Flags;
        if ((fl & TcpFlags.Ack) != 0 && (!c.PvmAckSet || SeqMath.Gt(f.Ack, c.PvmMaxAck)))
        {
            c.PvmMaxAck = f.Ack;
            c.PvmAckSet = true;
        }
        if ((fl & TcpFlags.Syn) != 0)
        {
            c.PvmSyn = fl & SynAckMask;
            uint b = f.Seq + 1;
            NotePvmEnd(c, b);
            if (!c.StreamInit)
            {
                InitStream(c, b);
            }
        }
        else if ((fl & TcpFlags.Rst) != 0)
        {
            c.PvmRst = true;
            c.PvmRstSeq = f.Seq;
        }
        else
        {
            bool fin = (fl & TcpFlags.Fin) != 0;
            NotePvmEnd(c, f.Seq + (uint)f.PayloadLength + (fin ? 1u : 0u));
            if (!c.StreamInit)
            {
                InitStream(c, f.Seq);
            }
            if (f.PayloadLength > 0 || fin)
            {
                AppendPvm(c, f);
            }
        }
    }

    private void SvmTcp(in PacketView v, long now)
    {
        ConnKey key = new(v.SrcAddress, v.DstAddress, v.SrcPort, v.DstPort, v.IsIPv6);
        TcpConnection c = GetConn(key, now);
        if (v.Has(TcpFlags.Syn) && c.ClosedAt != 0 && c.Held.IsEmpty)
        {
            ResetConn(c);
        }
        c.LastActivity = now;
        if (v.Has(TcpFlags.Ack) && (!c.SvmAckSet || SeqMath.Gt(v.AckNumber, c.SvmMaxAck)))
        {
            c.SvmMaxAck = v.AckNumber;
            c.SvmAckSet = true;
        }
        if (v.Has(TcpFlags.Syn))
        {
            // The SVM's ISN is not rewritten yet: only the flags are compared.
            c.SvmSyn = v.Flags & SynAckMask;
        }
        else if (v.Has(TcpFlags.Rst))
        {
            c.SvmRst = true;
            c.SvmRstSeq = v.Seq;
        }
        else if (v.PayloadLength > 0 || v.Has(TcpFlags.Fin))
        {
            if (!c.StreamInit)
            {
                InitStream(c, v.Seq);
            }
            if (!c.Diverged)
            {
                AppendSvm(c, v.Seq, v.Payload, v.Has(TcpFlags.Fin), v.Frame, now);
            }
        }
        else if (!c.StreamInit)
        {
            InitStream(c, v.Seq);
        }
        TryRelease(c, now);
    }

    private static void NotePvmEnd(TcpConnection c, uint end)
    {
        if (!c.PvmMaxEndSet || SeqMath.Gt(end, c.PvmMaxEnd))
        {
            c.PvmMaxEnd = end;
            c.PvmMaxEndSet = true;
        }
    }

    private static void InitStream(TcpConnection c, uint b)
    {
        c.StreamInit = true;
        c.PvmEnd = c.SvmEnd = b;
    }

    /// <summary>Appends a held PVM segment's new bytes (and FIN) if contiguous; then any now-contiguous held segments.</summary>
    private void AppendPvm(TcpConnection c, HeldFrame f)
    {
        if (c.Diverged)
        {
            return;
        }
        if (!AppendPvmOne(c, f))
        {
            f.NotAppended = true;
            c.PvmOooCount++;
            return;
        }
        bool progress = c.PvmOooCount > 0;
        while (progress && !c.Diverged)
        {
            progress = false;
            for (HeldFrame? h = c.Held.Head; h is not null; h = h.Next)
            {
                if (h.NotAppended && SeqMath.Le(h.Seq, c.PvmEnd) && AppendPvmOne(c, h))
                {
                    h.NotAppended = false;
                    c.PvmOooCount--;
                    progress = c.PvmOooCount > 0;
                }
            }
        }
    }

    /// <summary>Returns false when the segment starts beyond the PVM's contiguous end (out of order).</summary>
    private bool AppendPvmOne(TcpConnection c, HeldFrame f)
    {
        if (SeqMath.Gt(f.Seq, c.PvmEnd))
        {
            return false;
        }
        uint dataEnd = f.Seq + (uint)f.PayloadLength;
        if (SeqMath.Gt(dataEnd, c.PvmEnd))
        {
            int skip = (int)(c.PvmEnd - f.Seq);
            Feed(c, pvm: true, f.Payload.Slice(skip));
        }
        if ((f.Flags & TcpFlags.Fin) != 0 && !c.Diverged && c.PvmEnd == dataEnd && !c.PvmFinSet)
        {
            c.PvmFinSet = true;
            c.PvmFinSeq = dataEnd;
            c.PvmEnd = dataEnd + 1;
            if ((c.SvmFinSet && c.SvmFinSeq != dataEnd) || SeqMath.Gt(c.SvmEnd, c.PvmEnd))
            {
                Mismatch(c);
            }
        }
        return true;
    }

    private void AppendSvm(TcpConnection c, uint seq, ReadOnlySpan<byte> payload, bool fin, ReadOnlySpan<byte> frame, long now)
    {
        if (SeqMath.Gt(seq, c.SvmEnd))
        {
            // Out of order: keep a copy (bounded) until the gap fills.
            if (c.SvmOooCount >= _options.MaxOutOfOrderSegments || Counters.heldBytes > 2 * _options.MaxHeldBytes)
            {
                // The SVM's stream now has a gap it cannot fill: only a checkpoint brings the two sides together again.
                Counters.svmDropped++;
                if (!_requested[(int)CheckpointReason.QueueFull])
                    LastCause = $"queue full: out-of-order SVM segment dropped on tcp {Describe(c.Key)}";
                Request(CheckpointReason.QueueFull);
                return;
            }
            HeldFrame o = RentFrame(frame, now);
            o.Owner = c;
            AddConnHeld(c, o.Length);
            o.Seq = seq;
            o.Flags = fin ? TcpFlags.Fin : TcpFlags.None;
            o.PayloadOffset = OffsetOf(frame, payload);
            o.PayloadLength = payload.Length;
            c.SvmOoo.Enqueue(o);
            c.SvmOooCount++;
            _svmHeld.Add(o);
            return;
        }
        AppendSvmOne(c, seq, payload, fin);
        if (c.SvmOooCount == 0)
        {
            return;
        }
        bool progress = true;
        while (progress && !c.Diverged && c.SvmOooCount > 0)
        {
            progress = false;
            HeldFrame? prev = null;
            HeldFrame? h = c.SvmOoo.Head;
            while (h is not null)
            {
                HeldFrame? next = h.Next;
                if (SeqMath.Le(h.Seq, c.SvmEnd))
                {
                    AppendSvmOne(c, h.Seq, h.Payload, (h.Flags & TcpFlags.Fin) != 0);
                    c.SvmOoo.RemoveAfter(prev, h);
                    c.SvmOooCount--;
                    _svmHeld.Remove(h);
                    ReturnFrame(h);
                    progress = true;
                }
                else
                {
                    prev = h;
                }
                h = next;
            }
        }
    }

    private static int OffsetOf(ReadOnlySpan<byte> frame, ReadOnlySpan<byte> inner)
    {
        // inner is a slice of frame.
        return (int)System.Runtime.CompilerServices.Unsafe.ByteOffset(
            ref System.Runtime.InteropServices.MemoryMarshal.GetReference(frame),
            ref System.Runtime.InteropServices.MemoryMarshal.GetReference(inner));
    }

    private void AppendSvmOne(TcpConnection c, uint seq, ReadOnlySpan<byte> payload, bool fin)
    {
        uint dataEnd = seq + (uint)payload.Length;
        if (SeqMath.Gt(dataEnd, c.SvmEnd))
        {
            // Bytes below the current end (retransmission, or below the base) are ignored.
            int skip = (int)(c.SvmEnd - seq);
            if (skip < 0)
            {
                return; // gap; caller checks ordering, defensive
            }
            Feed(c, pvm: false, payload.Slice(skip));
        }
        if (fin && !c.Diverged && c.SvmEnd == dataEnd && !c.SvmFinSet)
        {
            c.SvmFinSet = true;
            c.SvmFinSeq = dataEnd;
            c.SvmEnd = dataEnd + 1;
            if ((c.PvmFinSet && c.PvmFinSeq != dataEnd) || SeqMath.Gt(c.PvmEnd, c.SvmEnd))
            {
                Mismatch(c);
            }
        }
    }

    /// <summary>
    /// Appends contiguous new bytes of one side: compares against the other side's bytes that are ahead, then keeps the
    /// rest as this side's ahead-bytes.
    /// </summary>
    private void Feed(TcpConnection c, bool pvm, ReadOnlySpan<byte> data)
    {
        ref uint mine = ref pvm ? ref c.PvmEnd : ref c.SvmEnd;
        uint other = pvm ? c.SvmEnd : c.PvmEnd;
        if (SeqMath.Lt(mine, other))
        {
            // The other side is ahead: its bytes are in the ring (its FIN, if any, is one position past them).
            int n = Math.Min(c.Ahead.Count, data.Length);
            if (!c.Ahead.StartsWith(data.Slice(0, n)))
            {
                Mismatch(c);
                return;
            }
            SubHeld(c.Ahead.Consume(n), c);
            Counters.matchedBytes += n;
            if (pvm && n > 0)
            {
                // The PVM caught up with part of what the SVM sent ahead: that output is matched, so the compare timeout
                // restarts for the rest (re-added at the tail of the pending list by UpdatePending).
                RemovePending(c);
            }
            mine += (uint)n;
            data = data.Slice(n);
        }
        if (data.IsEmpty)
        {
            return;
        }
        // This side is now level or ahead. Data past the other side's FIN can never match.
        bool otherFin = pvm ? c.SvmFinSet : c.PvmFinSet;
        if (otherFin)
        {
            Mismatch(c);
            return;
        }
        if (!pvm && Counters.heldBytes > 2 * _options.MaxHeldBytes)
        {
            Counters.svmDropped++;
            Mismatch(c);
            return;
        }
        AddHeld(c.Ahead.Append(data), c);
        mine += (uint)data.Length;
    }

    private void Mismatch(TcpConnection c)
    {
        if (!_requested[(int)CheckpointReason.Mismatch])
            LastCause = $"tcp mismatch on {Describe(c.Key)} (pvm end {c.PvmEnd}, svm end {c.SvmEnd}, pvm fin {c.PvmFinSet}, svm fin {c.SvmFinSet})";
        Counters.mismatches++;
        c.Diverged = true;
        SubHeld(c.Ahead.Clear(), c);
        Request(CheckpointReason.Mismatch);
    }

    private void TryRelease(TcpConnection c, long now)
    {
        HeldFrame? h;
        while ((h = c.Held.Head) is not null && CanRelease(c, h))
        {
            c.Held.Dequeue();
            _pvmHeld.Remove(h);
            Counters.matchedFrames++;
            NoteReleased(c, h);
            ReleaseAndReturn(h);
        }
        UpdatePending(c, now);
        if (c.ClosedAt == 0 && c.Held.IsEmpty && c.PendingSince == 0 &&
            ((c.PvmFinSet && c.SvmFinSet && SeqMath.Le(c.PvmEnd, c.SvmEnd) && SeqMath.Le(c.SvmEnd, c.PvmEnd)) || (c.PvmRst && c.SvmRst)))
        {
            c.ClosedAt = now;
        }
    }

    private static void NoteReleased(TcpConnection c, HeldFrame h)
    {
        TcpFlags fl = h.Flags;
        uint end;
        if ((fl & TcpFlags.Syn) != 0)
        {
            c.ReleasedSyn = fl & SynAckMask;
            end = h.Seq + 1;
        }
        else if ((fl & TcpFlags.Rst) != 0)
        {
            return;
        }
        else
        {
            end = h.Seq + (uint)h.PayloadLength + ((fl & TcpFlags.Fin) != 0 ? 1u : 0u);
        }
        if (!c.ReleasedEndSet || SeqMath.Gt(end, c.ReleasedEnd))
        {
            c.ReleasedEnd = end;
            c.ReleasedEndSet = true;
        }
    }

    private static bool CanRelease(TcpConnection c, HeldFrame h)
    {
        TcpFlags fl = h.Flags;
        if ((fl & TcpFlags.Syn) != 0)
        {
            return c.SvmSyn == (fl & SynAckMask);
        }
        if ((fl & TcpFlags.Rst) != 0)
        {
            return c.SvmRst && c.SvmRstSeq == h.Seq;
        }
        if (c.Diverged)
        {
            return false;
        }
        if ((fl & TcpFlags.Ack) != 0 && !(c.SvmAckSet && SeqMath.Le(h.Ack, c.SvmMaxAck)))
        {
            return false;
        }
        bool fin = (fl & TcpFlags.Fin) != 0;
        if (h.PayloadLength == 0 && !fin)
        {
            return true;
        }
        if (h.NotAppended)
        {
            return false;
        }
        uint dataEnd = h.Seq + (uint)h.PayloadLength;
        if (!c.StreamInit || SeqMath.Gt(dataEnd, SeqMath.Min(c.PvmEnd, c.SvmEnd)))
        {
            return false;
        }
        if (fin)
        {
            return c.SvmFinSet && c.SvmFinSeq == dataEnd;
        }
        return true;
    }

    private void UpdatePending(TcpConnection c, long now)
    {
        bool pending = !c.Diverged && (
            c.SvmOooCount > 0 ||
            (c.StreamInit && SeqMath.Gt(c.SvmEnd, c.PvmEnd)) ||
            (c.SvmRst && !c.PvmRst) ||
            (c.SvmSyn != TcpFlags.None && c.SvmSyn != c.PvmSyn));
        if (pending)
        {
            if (c.PendingSince == 0)
            {
                c.PendingSince = now == 0 ? 1 : now;
                c.PendPrev = _pendTail;
                c.PendNext = null;
                if (_pendTail is null)
                {
                    _pendHead = c;
                }
                else
                {
                    _pendTail.PendNext = c;
                }
                _pendTail = c;
            }
        }
        else
        {
            RemovePending(c);
        }
    }

    private void RemovePending(TcpConnection c)
    {
        if (c.PendingSince == 0)
        {
            return;
        }
        if (c.PendPrev is null)
        {
            _pendHead = c.PendNext;
        }
        else
        {
            c.PendPrev.PendNext = c.PendNext;
        }
        if (c.PendNext is null)
        {
            _pendTail = c.PendPrev;
        }
        else
        {
            c.PendNext.PendPrev = c.PendPrev;
        }
        c.PendPrev = c.PendNext = null;
        c.PendingSince = 0;
    }

    private TcpConnection GetConn(ConnKey key, long now)
    {
        if (_conns.TryGetValue(key, out TcpConnection? c))
        {
            return c;
        }
        if (_conns.Count >= _options.MaxConnections)
        {
            Sweep(now, force: true);
            if (_conns.Count >= _options.MaxConnections)
            {
                Counters.connectionTableOverflows++;
                Request(CheckpointReason.QueueFull);
            }
        }
        c = _connPool.Count > 0 ? _connPool.Pop() : new TcpConnection();
        c.HeldBytes = 0;
        c.Key = key;
        c.ResetAll();
        c.LastActivity = now;
        _conns.Add(key, c);
        Counters.connections = _conns.Count;
        return c;
    }

    private void ResetConn(TcpConnection c)
    {
        FreeSvmOoo(c);
        SubHeld(c.Ahead.Clear(), c);
        RemovePending(c);
        c.PvmOooCount = 0;
        c.ResetAll();
    }

    private void FreeSvmOoo(TcpConnection c)
    {
        HeldFrame? h;
        while ((h = c.SvmOoo.Dequeue()) is not null)
        {
            _svmHeld.Remove(h);
            ReturnFrame(h);
        }
        c.SvmOooCount = 0;
    }

    /// <summary>Removes lingering closed and idle connections; when forced (table full) also the least recently active idle one.</summary>
    /// <summary>
    /// Drops connections closed on both sides (after the linger) or idle, holding nothing. With <paramref name="force"/>
    /// (the table is full) it also evicts, in one pass, every open connection holding nothing that was used less recently
    /// than the average of those (at least the least recently used one), so the table drops well below its bound and the
    /// next inserts cost nothing, instead of a full scan per new connection.
    /// </summary>
    private void Sweep(long now, bool force)
    {
        TcpConnection? lru = null;
        int removed = 0;
        long sum = 0, candidates = 0;
        foreach (KeyValuePair<ConnKey, TcpConnection> kv in _conns)
        {
            TcpConnection c = kv.Value;
            if (!c.Held.IsEmpty || c.PendingSince != 0 || c.SvmOooCount > 0)
            {
                continue;
            }
            bool closedDone = c.ClosedAt != 0 && (force || now - c.ClosedAt >= _lingerTicks);
            bool idle = now - c.LastActivity >= _idleTicks;
            if (closedDone || idle)
            {
                RemoveConn(c);
                removed++;
                if (force)
                {
                    Counters.connectionsEvicted++;
                }
            }
            else if (force)
            {
                sum += now - c.LastActivity;
                candidates++;
                if (lru is null || c.LastActivity < lru.LastActivity)
                {
                    lru = c;
                }
            }
        }
        if (!force || candidates == 0 || _conns.Count < _options.MaxConnections - _options.MaxConnections / 4)
        {
            return;
        }
        long meanAge = sum / candidates;
        foreach (KeyValuePair<ConnKey, TcpConnection> kv in _conns)
        {
            TcpConnection c = kv.Value;
            if (c.Held.IsEmpty && c.PendingSince == 0 && c.SvmOooCount == 0 && (now - c.LastActivity >= meanAge || ReferenceEquals(c, lru)))
            {
                RemoveConn(c);
                Counters.connectionsEvicted++;
            }
        }
    }

    private void RemoveConn(TcpConnection c)
    {
        _conns.Remove(c.Key);
        FreeSvmOoo(c);
        SubHeld(c.Ahead.Clear(), c);
        RemovePending(c);
        c.Held = default;
        _connPool.Push(c);
        Counters.connections = _conns.Count;
    }

    // ---------------------------------------------------------------- held frames

    private HeldFrame RentFrame(ReadOnlySpan<byte> frame, long now)
    {
        HeldFrame f = _framePool.Count > 0 ? _framePool.Pop() : new HeldFrame();
        f.Buffer = ArrayPool<byte>.Shared.Rent(Math.Max(frame.Length, 64));
        frame.CopyTo(f.Buffer);
        f.Length = frame.Length;
        f.Arrival = now;
        f.NotAppended = false;
        f.Next = null;
        AddHeld(frame.Length);
        return f;
    }

    private HeldFrame Hold(ReadOnlySpan<byte> frame, long now, object owner)
    {
        HeldFrame f = RentFrame(frame, now);
        f.Owner = owner;
        if (owner is TcpConnection tc)
        {
            AddConnHeld(tc, f.Length);
        }
        f.Ordinal = _nextOrdinal++;
        _pvmHeld.Add(f);
        Counters.heldFrames++;
        return f;
    }

    private void ReturnFrame(HeldFrame f)
    {
        SubHeld(f.Length, f.Owner as TcpConnection);
        ArrayPool<byte>.Shared.Return(f.Buffer);
        f.Buffer = Array.Empty<byte>();
        f.Owner = null;
        f.Next = f.GNext = f.GPrev = null;
        _framePool.Push(f);
    }

    private void ReleaseAndReturn(HeldFrame h)
    {
        Counters.heldFrames--;
        Counters.releasedFrames++;
        try
        {
            _sink.Release(h.Span);
        }
        finally
        {
            ReturnFrame(h);
        }
    }

    private void ReleaseAllHeld(bool passThrough)
    {
        HeldFrame? h;
        while ((h = _pvmHeld.Head) is not null)
        {
            _pvmHeld.Remove(h);
            if (passThrough)
            {
                Counters.releasedPassThrough++;
            }
            else
            {
                Counters.releasedOnCheckpoint++;
            }
            ReleaseAndReturn(h);
        }
    }

    private void DropSvmHeld()
    {
        HeldFrame? h;
        while ((h = _svmHeld.Head) is not null)
        {
            _svmHeld.Remove(h);
            ReturnFrame(h);
        }
    }

    private void ClearAllState()
    {
        DropSvmHeld();
        foreach (KeyValuePair<ConnKey, TcpConnection> kv in _conns)
        {
            TcpConnection c = kv.Value;
            SubHeld(c.Ahead.Clear(), c);
            c.Held = default;
            c.SvmOoo = default;
            c.SvmOooCount = 0;
            c.PendPrev = c.PendNext = null;
            c.PendingSince = 0;
            _connPool.Push(c);
        }
        _conns.Clear();
        _pendHead = _pendTail = null;
        foreach (KeyValuePair<FlowKey, OtherFlow> kv in _flows)
        {
            kv.Value.Pvm = default;
            kv.Value.Svm = default;
            _flowPool.Push(kv.Value);
        }
        _flows.Clear();
        Counters.connections = 0;
        Counters.flows = 0;
        _lastMark = default;
        Array.Clear(_requested);
    }

    private void AddHeld(long n)
    {
        if (n == 0)
        {
            return;
        }
        long v = Counters.heldBytes += n;
        if (v > Counters.peakHeldBytes)
        {
            Counters.peakHeldBytes = v;
        }
        if (v > _options.MaxHeldBytes)
        {
            Request(CheckpointReason.QueueFull);
        }
    }

    private void SubHeld(long n, TcpConnection? c = null)
    {
        Counters.heldBytes -= n;
        if (c is not null)
        {
            c.HeldBytes -= n;
        }
    }

    private void AddHeld(long n, TcpConnection c)
    {
        AddHeld(n);
        AddConnHeld(c, n);
    }

    /// <summary>Counts <paramref name="n"/> more bytes against <paramref name="c"/>'s own bound (the global count is kept by <see cref="AddHeld(long)"/>).</summary>
    private void AddConnHeld(TcpConnection c, long n)
    {
        c.HeldBytes += n;
        if (c.HeldBytes > _options.MaxHeldBytesPerConnection && !_requested[(int)CheckpointReason.QueueFull])
        {
            LastCause = $"queue full: tcp {Describe(c.Key)} holds {c.HeldBytes} bytes (limit {_options.MaxHeldBytesPerConnection})";
            Request(CheckpointReason.QueueFull);
        }
    }

    private void Request(CheckpointReason reason)
    {
        if (_requested[(int)reason])
        {
            return;
        }
        _requested[(int)reason] = true;
        Counters.checkpointRequests[(int)reason]++;
        _sink.RequestCheckpoint(reason);
    }

    private long ToTicks(TimeSpan t) => (long)(t.TotalSeconds * _time.TimestampFrequency);
}
