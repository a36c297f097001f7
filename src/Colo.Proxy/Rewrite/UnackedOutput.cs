using System.Buffers;

namespace Colo.Proxy;

/// <summary>Bounds of an <see cref="UnackedOutput"/>. Validated by its constructor.</summary>
public sealed record UnackedOutputOptions
{
    /// <summary>
    /// Most bytes kept in all, counted as whole Ethernet frames. A segment that would go beyond is not kept (counted in
    /// <see cref="UnackedOutput.NotRetained"/>; the client then gets those bytes by TCP retransmission). Default 16 MiB;
    /// must be positive.
    /// </summary>
    public long MaxBytes { get; init; } = 16L * 1024 * 1024;

    /// <summary>Most bytes kept for one connection (whole frames), as <see cref="MaxBytes"/>. Default 1 MiB; must be positive.</summary>
    public long MaxBytesPerConnection { get; init; } = 1024 * 1024;

    /// <summary>
    /// Most connections tracked. When full, connections holding no segment are forgotten; if there are none, a segment
    /// of a new connection is not kept (counted in <see cref="UnackedOutput.NotRetained"/>). Default 65536; must be positive.
    /// </summary>
    public int MaxConnections { get; init; } = 65536;
}

/// <summary>
/// The secondary's copy of the SVM's TCP output that the client has not acknowledged yet, replayed to the client at
/// failover so it need not wait for a retransmission timeout (Linux: at least 200 ms) to get what the SVM had already
/// sent. Before failover the SVM's output goes over the link to the primary for comparison, never to the client; bytes
/// the PVM had produced but not released when the primary died reach the client only when the SVM's TCP retransmits
/// them, or right away from here.
/// </summary>
/// <remarks>
/// <para>
/// Feeding: <see cref="OnSvmFrame"/> with every SVM frame after <see cref="SequenceRewriter.RewriteFromSvm"/> put it in
/// the PVM's (the client's) sequence space, passing that method's result; <see cref="OnClientFrame"/> with every client
/// frame before <see cref="SequenceRewriter.RewriteFromClient"/> (its acknowledgement number then is in the same space);
/// <see cref="Clear"/> whenever a new SVM generation takes over a checkpoint (its state is the PVM's: the old SVM's output
/// is not its own); <see cref="DrainTo"/> at failover. Only guest→client TCP segments that carry payload or FIN are kept
/// (never SYN, SYN-ACK, RST or pure ACKs; never UDP, ICMP or anything else, for which a duplicate could be visible), one
/// copy of the whole frame each, per connection (IPv4 and IPv6, keyed by 128-bit addresses and ports as the compare
/// engine and rewriter key them) in sequence order, until the client's acknowledgement covers the segment's end
/// (serial-number arithmetic, so the 32-bit wraparound is handled). A RST from either side or an acknowledgement of
/// the guest's FIN ends the connection: its segments are freed, and later SVM output on it (a retransmission racing
/// with the SVM's processing of that acknowledgement) is not kept; a SYN (a new connection on the 4-tuple) forgets it.
/// </para>
/// <para>
/// Why replaying is safe: at failover the SVM's current state is the truth, and every kept segment is output that state
/// produced (its connection's sequence offset was known, and nothing of an older SVM generation is kept). Bytes the
/// client already got are duplicates its TCP discards; bytes it never got are exactly what its TCP would get by the
/// SVM's retransmission anyway, only later. A segment of a connection the client has meanwhile closed draws at most an
/// ACK or a RST, as a late retransmission would. A segment not kept (bound reached, offset unknown) is a plain loss that
/// TCP retransmission repairs.
/// </para>
/// <para>
/// Not thread-safe: the caller serialises every call. Allocation-free in steady state: copies live in buffers rented
/// from <see cref="ArrayPool{T}.Shared"/>, segment and connection records are pooled, and the table reuses its slots.
/// </para>
/// </remarks>
public sealed class UnackedOutput
{
    /// <summary>One kept frame: <see cref="Buffer"/>[0..<see cref="Length"/>) covering sequence space [Seq, End).</summary>
    private sealed class Segment
    {
        public byte[] Buffer = [];
        public int Length;
        public uint Seq;
        public uint End;
        public Segment? Next;
    }

    private sealed class Conn
    {
        public ConnKey Key;
        /// <summary>Kept segments ordered by <see cref="Segment.Seq"/> (serial order).</summary>
        public Segment? Head, Tail;
        public long Bytes;
        public int Count;
        public bool AckKnown;
        /// <summary>Highest acknowledgement number the client sent (valid when <see cref="AckKnown"/>).</summary>
        public uint Acked;
        public bool FinKnown;
        /// <summary>Sequence number just past the guest's FIN (valid when <see cref="FinKnown"/>).</summary>
        public uint FinEnd;
        /// <summary>Over (RST, or the guest's FIN acknowledged): holds nothing, and nothing more is kept until a new handshake.</summary>
        public bool Closed;
    }

    private readonly UnackedOutputOptions _options;
    private readonly Dictionary<ConnKey, Conn> _conns = new();
    private readonly Stack<Conn> _connPool = new();
    private readonly Stack<Segment> _segmentPool = new();
    private long _bytes;
    private int _segments;

    /// <summary>Creates an empty store.</summary>
    /// <param name="options">Bounds; defaults when null.</param>
    /// <exception cref="ArgumentOutOfRangeException">A bound is not positive.</exception>
    public UnackedOutput(UnackedOutputOptions? options = null)
    {
        _options = options ?? new UnackedOutputOptions();
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(_options.MaxBytes, nameof(options));
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(_options.MaxBytesPerConnection, nameof(options));
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(_options.MaxConnections, nameof(options));
    }

    /// <summary>Bytes kept now (whole frames).</summary>
    public long RetainedBytes => _bytes;

    /// <summary>Highest <see cref="RetainedBytes"/> since creation.</summary>
    public long PeakRetainedBytes { get; private set; }

    /// <summary>Segments kept now.</summary>
    public int RetainedSegments => _segments;

    /// <summary>Connections tracked now (with or without kept segments, ended ones included).</summary>
    public int Connections => _conns.Count;

    /// <summary>Segments with payload or FIN not kept because a bound (<see cref="UnackedOutputOptions"/>) was reached.</summary>
    public long NotRetained { get; private set; }

    /// <summary>Segments with payload or FIN not kept because the rewriter could not vouch for their sequence space.</summary>
    public long Untranslated { get; private set; }

    /// <summary>Segments not kept because the client had acknowledged their end already (SVM retransmissions, or an SVM behind the client).</summary>
    public long AlreadyAcked { get; private set; }

    /// <summary>Segments not kept because their connection was over (RST, or the guest's FIN acknowledged): late SVM retransmissions.</summary>
    public long AfterClose { get; private set; }

    /// <summary>Segments written by <see cref="DrainTo"/> since creation.</summary>
    public long ReplayedSegments { get; private set; }

    /// <summary>Bytes (whole frames) written by <see cref="DrainTo"/> since creation.</summary>
    public long ReplayedBytes { get; private set; }

    /// <summary>
    /// An SVM frame, after <see cref="SequenceRewriter.RewriteFromSvm"/>. Keeps a copy of a guest→client TCP segment
    /// with payload or FIN when <paramref name="translated"/> is true and the client has not acknowledged its end yet
    /// (unless it repeats a kept segment, its connection is over, or a bound is reached); a RST ends the connection, a
    /// SYN or SYN-ACK (a new handshake on the 4-tuple) forgets it. Other frames are ignored. Never throws.
    /// </summary>
    /// <param name="frame">The whole Ethernet frame as it would go to the client; copied, not kept.</param>
    /// <param name="translated">What <see cref="SequenceRewriter.RewriteFromSvm"/> returned for it: only then is the
    /// sequence number in the client's space, and only then is the segment kept.</param>
    public void OnSvmFrame(ReadOnlySpan<byte> frame, bool translated)
    {
        if (!PacketView.TryParse(frame, out PacketView v, out _) || !v.IsTcp)
        {
            return;
        }
        var key = new ConnKey(v.SrcAddress, v.DstAddress, v.SrcPort, v.DstPort, v.IsIPv6);
        _conns.TryGetValue(key, out Conn? conn);
        if (v.Has(TcpFlags.Syn))
        {
            if (conn is not null)
            {
                Remove(conn);
            }
            return;
        }
        if (v.Has(TcpFlags.Rst))
        {
            if (conn is not null)
            {
                Close(conn);
            }
            return;
        }
        int length = v.SequenceLength;
        if (length == 0)
        {
            return; // pure ACK, window update, keepalive probe
        }
        if (!translated)
        {
            Untranslated++;
            return;
        }
        uint seq = v.Seq;
        uint end = seq + (uint)length;
        if (conn is not null)
        {
            if (conn.Closed)
            {
                // E.g. the SVM's retransmission timer firing before it processed the client's ACK of its FIN: the
                // client has everything, and replaying this would only draw a RST.
                AfterClose++;
                return;
            }
            if (v.Has(TcpFlags.Fin))
            {
                conn.FinKnown = true;
                conn.FinEnd = end;
            }
            if (conn.AckKnown && SeqMath.Le(end, conn.Acked))
            {
                AlreadyAcked++;
                return;
            }
            if (Covered(conn, seq, end))
            {
                return; // a copy is kept
            }
        }
        int size = frame.Length;
        if (_bytes + size > _options.MaxBytes || (conn?.Bytes ?? 0) + size > _options.MaxBytesPerConnection)
        {
            NotRetained++;
            return;
        }
        if (conn is null)
        {
            if (_conns.Count >= _options.MaxConnections && !ForgetEmptyConnections())
            {
                NotRetained++;
                return;
            }
            conn = _connPool.Count > 0 ? _connPool.Pop() : new Conn();
            conn.Key = key;
            conn.Head = conn.Tail = null;
            conn.Bytes = 0;
            conn.Count = 0;
            conn.AckKnown = false;
            conn.Acked = 0;
            conn.FinKnown = v.Has(TcpFlags.Fin);
            conn.FinEnd = end;
            conn.Closed = false;
            _conns.Add(key, conn);
        }
        Segment s = _segmentPool.Count > 0 ? _segmentPool.Pop() : new Segment();
        s.Buffer = ArrayPool<byte>.Shared.Rent(size);
        frame.CopyTo(s.Buffer);
        s.Length = size;
        s.Seq = seq;
        s.End = end;
        Insert(conn, s);
        conn.Bytes += size;
        conn.Count++;
        _bytes += size;
        _segments++;
        if (_bytes > PeakRetainedBytes)
        {
            PeakRetainedBytes = _bytes;
        }
    }

    /// <summary>
    /// A client frame, before <see cref="SequenceRewriter.RewriteFromClient"/> (its acknowledgement number is in the PVM's
    /// space, as the kept segments are). Frees the connection's segments whose end the acknowledgement covers; ends the
    /// connection (frees everything, keeps nothing more of it) on a RST and when the guest's FIN is acknowledged; forgets
    /// it on a SYN without ACK (a new connection on the 4-tuple). Other frames are ignored. Never throws.
    /// </summary>
    /// <param name="frame">The whole Ethernet frame from the client; only read.</param>
    public void OnClientFrame(ReadOnlySpan<byte> frame)
    {
        if (_conns.Count == 0 || !PacketView.TryParse(frame, out PacketView v, out _) || !v.IsTcp)
        {
            return;
        }
        var key = new ConnKey(v.DstAddress, v.SrcAddress, v.DstPort, v.SrcPort, v.IsIPv6);
        if (!_conns.TryGetValue(key, out Conn? conn))
        {
            return;
        }
        if (v.Has(TcpFlags.Syn) && !v.Has(TcpFlags.Ack))
        {
            Remove(conn);
            return;
        }
        if (conn.Closed)
        {
            return;
        }
        if (v.Has(TcpFlags.Rst))
        {
            Close(conn);
            return;
        }
        if (!v.Has(TcpFlags.Ack))
        {
            return;
        }
        uint ack = v.AckNumber;
        if (conn.AckKnown && SeqMath.Le(ack, conn.Acked))
        {
            return;
        }
        conn.AckKnown = true;
        conn.Acked = ack;
        if (conn.FinKnown && SeqMath.Ge(ack, conn.FinEnd))
        {
            Close(conn);
            return;
        }
        Segment? prev = null;
        Segment? cur = conn.Head;
        while (cur is not null && SeqMath.Lt(cur.Seq, ack))
        {
            Segment? next = cur.Next;
            if (SeqMath.Le(cur.End, ack))
            {
                if (prev is null)
                {
                    conn.Head = next;
                }
                else
                {
                    prev.Next = next;
                }
                if (ReferenceEquals(conn.Tail, cur))
                {
                    conn.Tail = prev;
                }
                conn.Bytes -= cur.Length;
                conn.Count--;
                Free(cur);
            }
            else
            {
                prev = cur;
            }
            cur = next;
        }
    }

    /// <summary>
    /// Failover: writes every kept segment, connection by connection, each connection's in sequence order, then forgets
    /// everything (as <see cref="Clear"/>), also when <paramref name="write"/> throws.
    /// </summary>
    /// <param name="write">Sends one frame to the client network; the span is valid only during the call.</param>
    /// <returns>Segments written.</returns>
    public int DrainTo(Action<ReadOnlySpan<byte>> write)
    {
        ArgumentNullException.ThrowIfNull(write);
        int written = 0;
        try
        {
            foreach (KeyValuePair<ConnKey, Conn> kv in _conns)
            {
                for (Segment? s = kv.Value.Head; s is not null; s = s.Next)
                {
                    write(s.Buffer.AsSpan(0, s.Length));
                    written++;
                    ReplayedSegments++;
                    ReplayedBytes += s.Length;
                }
            }
        }
        finally
        {
            Clear();
        }
        return written;
    }

    /// <summary>Forgets every connection and returns every buffer (a new SVM generation took over a checkpoint).</summary>
    public void Clear()
    {
        foreach (KeyValuePair<ConnKey, Conn> kv in _conns)
        {
            Release(kv.Value);
        }
        _conns.Clear();
        _bytes = 0;
        _segments = 0;
    }

    /// <summary>True when a kept segment already covers [seq, end). Only walks the list when the range overlaps kept data.</summary>
    private static bool Covered(Conn conn, uint seq, uint end)
    {
        if (conn.Tail is null || SeqMath.Ge(seq, conn.Tail.End))
        {
            return false; // new data (the common case): beyond everything kept
        }
        for (Segment? s = conn.Head; s is not null && SeqMath.Le(s.Seq, seq); s = s.Next)
        {
            if (SeqMath.Ge(s.End, end))
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>Links <paramref name="s"/> into the connection's list, after every segment starting at or before it.</summary>
    private static void Insert(Conn conn, Segment s)
    {
        s.Next = null;
        if (conn.Tail is null)
        {
            conn.Head = conn.Tail = s;
            return;
        }
        if (SeqMath.Ge(s.Seq, conn.Tail.Seq))
        {
            conn.Tail.Next = s;
            conn.Tail = s;
            return;
        }
        Segment? prev = null;
        Segment? cur = conn.Head;
        while (cur is not null && SeqMath.Le(cur.Seq, s.Seq))
        {
            prev = cur;
            cur = cur.Next;
        }
        s.Next = cur;
        if (prev is null)
        {
            conn.Head = s;
        }
        else
        {
            prev.Next = s;
        }
    }

    /// <summary>The table is full: forgets the connections that hold no segment (closed ones included). False when there were none.</summary>
    private bool ForgetEmptyConnections()
    {
        int removed = 0;
        foreach (KeyValuePair<ConnKey, Conn> kv in _conns)
        {
            if (kv.Value.Count == 0)
            {
                _conns.Remove(kv.Key); // allowed while enumerating a Dictionary since .NET Core 3.0
                _connPool.Push(kv.Value);
                removed++;
            }
        }
        return removed > 0;
    }

    private void Remove(Conn conn)
    {
        _conns.Remove(conn.Key);
        Release(conn);
    }

    /// <summary>The connection is over: frees its segments, keeps the record (closed) so late SVM output is not kept.</summary>
    private void Close(Conn conn)
    {
        FreeSegments(conn);
        conn.Closed = true;
    }

    /// <summary>Frees the connection's segments and pools the record (the caller removes it from the table).</summary>
    private void Release(Conn conn)
    {
        FreeSegments(conn);
        _connPool.Push(conn);
    }

    private void FreeSegments(Conn conn)
    {
        for (Segment? s = conn.Head; s is not null;)
        {
            Segment? next = s.Next;
            Free(s);
            s = next;
        }
        conn.Head = conn.Tail = null;
        conn.Bytes = 0;
        conn.Count = 0;
    }

    private void Free(Segment s)
    {
        _bytes -= s.Length;
        _segments--;
        ArrayPool<byte>.Shared.Return(s.Buffer);
        s.Buffer = [];
        s.Next = null;
        _segmentPool.Push(s);
    }
}
