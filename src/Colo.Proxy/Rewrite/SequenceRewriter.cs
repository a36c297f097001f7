using System.Buffers.Binary;

namespace Colo.Proxy;

/// <summary>
/// Secondary-side TCP sequence translation (after QEMU net/filter-rewriter.c): the SVM chose its own initial sequence
/// numbers for connections opened since the last checkpoint; this translates the SVM's sequence space into the PVM's
/// per connection, so SVM output compares against PVM output and, after failover, clients keep their connections.
/// </summary>
/// <remarks>
/// Not thread-safe; the caller serialises calls. Connections whose offset is 0 or unknown are left untouched, as are
/// malformed and non-TCP frames. Offsets are learned from the handshake: once the SVM's ISN is known (from its SYN or
/// SYN-ACK), the first client segment with ACK gives offset = clientAck − (svmIsn + 1).
/// </remarks>
public sealed class SequenceRewriter
{
    private sealed class Entry
    {
        public Key Key;
        public bool IsnKnown;
        public uint SvmIsn;
        public bool OffsetKnown;
        public uint Offset;
        public bool ClientFin, SvmFin, Rst;
        public long LastActivity;
    }

    /// <summary>Connection key: 128-bit addresses (IPv4 as ::ffff:a.b.c.d) and ports; <paramref name="IPv6"/> keeps a v4-mapped IPv6 packet apart from IPv4.</summary>
    private readonly record struct Key(UInt128 GuestIp, UInt128 PeerIp, ushort GuestPort, ushort PeerPort, bool IPv6)
    {
        public override int GetHashCode()
        {
            ulong h = (ulong)GuestIp * 0x9E3779B97F4A7C15UL ^ (ulong)(GuestIp >> 64) * 0xC2B2AE3D27D4EB4FUL
                ^ (ulong)PeerIp * 0x165667B19E3779F9UL ^ (ulong)(PeerIp >> 64) * 0x85EBCA77C2B2AE63UL
                ^ ((ulong)GuestPort << 17 | (ulong)PeerPort << 1 | (IPv6 ? 1UL : 0UL)) * 0x27D4EB2F165667C5UL;
            return (int)(h ^ h >> 32);
        }
    }

    private readonly Dictionary<Key, Entry> _table = new();
    private readonly Stack<Entry> _pool = new();
    private readonly TimeProvider _time;
    private readonly int _maxConnections;
    private readonly long _closedIdleTicks;
    private readonly long _idleTicks;
    private long _lastExpire;
    // Since the last checkpoint reset, an open entry whose offset was not known to be 0 was evicted or expired: an
    // untracked connection may then need an offset nobody knows any more.
    private bool _untrackedUnsure;

    /// <summary>Creates a rewriter.</summary>
    /// <param name="time">Clock for expiry; <see cref="TimeProvider.System"/> when null.</param>
    /// <param name="maxConnections">Table bound (default 65536); when full, closed then least recently used entries are evicted.</param>
    /// <param name="closedIdle">How long an entry closed by FIN (both sides) or RST stays after its last packet (default 60 s).</param>
    /// <param name="idle">How long any entry stays without packets (default 2 h).</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxConnections"/> is not positive.</exception>
    public SequenceRewriter(TimeProvider? time = null, int maxConnections = 65536, TimeSpan? closedIdle = null, TimeSpan? idle = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxConnections);
        _time = time ?? TimeProvider.System;
        _maxConnections = maxConnections;
        _closedIdleTicks = (long)((closedIdle ?? TimeSpan.FromSeconds(60)).TotalSeconds * _time.TimestampFrequency);
        _idleTicks = (long)((idle ?? TimeSpan.FromHours(2)).TotalSeconds * _time.TimestampFrequency);
    }

    /// <summary>
    /// True (default): track new connections (from the SVM's SYN/SYN-ACK) and learn their offsets. Set false at
    /// failover: from then on clients talk to the SVM directly, so connections opened afterwards are not tracked and
    /// never get an offset; existing connections keep translating, and one whose handshake was in progress still
    /// learns its offset from the client's first ACK.
    /// </summary>
    public bool LearnOffsets { get; set; } = true;

    /// <summary>Number of tracked connections.</summary>
    public int ConnectionCount => _table.Count;

    /// <summary>Frames modified so far (either direction).</summary>
    public long RewrittenFrames { get; private set; }

    /// <summary>Entries evicted because the table was full.</summary>
    public long Evictions { get; private set; }

    /// <summary>
    /// Open entries whose offset was not known to be 0 (non-zero, or a handshake still in progress) that were evicted or
    /// expired. After one, until the next <see cref="ResetAfterCheckpoint"/>, <see cref="RewriteFromSvm"/> no longer
    /// vouches for untracked connections (returns false for them).
    /// </summary>
    public long OffsetsLost { get; private set; }

    /// <summary>
    /// Client → SVM: on connections with a non-zero offset subtracts it from the acknowledgement number and from both
    /// edges of every SACK block, fixing the TCP checksum incrementally. Learns the offset (see class remarks).
    /// Malformed and non-TCP frames are left untouched. Never throws.
    /// </summary>
    /// <param name="frame">The frame, modified in place.</param>
    public void RewriteFromClient(Span<byte> frame)
    {
        if (!PacketView.TryParse(frame, out PacketView v, out _) || !v.IsTcp)
        {
            return;
        }
        Key key = new(v.DstAddress, v.SrcAddress, v.DstPort, v.SrcPort, v.IsIPv6);
        if (!_table.TryGetValue(key, out Entry? e))
        {
            return;
        }
        long now = _time.GetTimestamp();
        e.LastActivity = now;
        if (v.Has(TcpFlags.Syn) && !v.Has(TcpFlags.Ack))
        {
            // A new client SYN on this 4-tuple: a new connection; forget the old translation.
            Remove(e);
            return;
        }
        if (v.Has(TcpFlags.Rst))
        {
            e.Rst = true;
        }
        if (v.Has(TcpFlags.Fin))
        {
            e.ClientFin = true;
        }
        if (!v.Has(TcpFlags.Ack))
        {
            return;
        }
        if (!e.OffsetKnown)
        {
            // Also after failover: a handshake the SVM began before it is completed by the client's first ACK, which
            // acknowledges either the PVM's SYN-ACK (offset = PVM ISN - SVM ISN) or, if the client never saw that one,
            // the SVM's retransmitted SYN-ACK (offset 0). Either way the ACK gives the right offset.
            if (!e.IsnKnown)
            {
                return;
            }
            e.Offset = v.AckNumber - (e.SvmIsn + 1);
            e.OffsetKnown = true;
        }
        uint off = e.Offset;
        if (off == 0)
        {
            return;
        }
        Span<byte> tcp = frame.Slice(v.L4Offset);
        ushort ck = BinaryPrimitives.ReadUInt16BigEndian(tcp.Slice(16, 2));
        uint oldAck = v.AckNumber;
        uint newAck = oldAck - off;
        BinaryPrimitives.WriteUInt32BigEndian(tcp.Slice(8, 4), newAck);
        ck = Checksum.Update32(ck, oldAck, newAck);
        // The incremental update works on 16-bit words; SACK blocks after an odd number of option bytes (e.g. a single
        // NOP) are not word-aligned, and then the checksum is recomputed instead (rare: stacks align SACK).
        bool oddSack = ((v.SackOffset - v.L4Offset) & 1) != 0;
        for (int i = 0; i < v.SackBlockCount; i++)
        {
            Span<byte> edge = frame.Slice(v.SackOffset + i * 8, 8);
            uint l = BinaryPrimitives.ReadUInt32BigEndian(edge);
            uint r = BinaryPrimitives.ReadUInt32BigEndian(edge.Slice(4));
            BinaryPrimitives.WriteUInt32BigEndian(edge, l - off);
            BinaryPrimitives.WriteUInt32BigEndian(edge.Slice(4), r - off);
            if (!oddSack)
            {
                ck = Checksum.Update32(ck, l, l - off);
                ck = Checksum.Update32(ck, r, r - off);
            }
        }
        BinaryPrimitives.WriteUInt16BigEndian(tcp.Slice(16, 2), ck);
        if (oddSack && v.SackBlockCount > 0)
        {
            Checksum.RecomputeTcp(frame, v);
        }
        RewrittenFrames++;
    }

    /// <summary>
    /// SVM → client: on connections with a non-zero offset adds it to the sequence number, fixing the TCP checksum
    /// incrementally. Records the SVM's ISN from its SYN or SYN-ACK (only while <see cref="LearnOffsets"/>).
    /// Malformed and non-TCP frames are left untouched. Never throws.
    /// </summary>
    /// <param name="frame">The frame, modified in place.</param>
    /// <returns>
    /// True when the frame is a well-formed TCP segment whose sequence number is now in the space the client knows (the
    /// PVM's): its connection is tracked with a known offset (0 or not), or it is untracked, which means it was opened
    /// before the last checkpoint (the SVM then holds the PVM's state: offset 0) or, after failover
    /// (<see cref="LearnOffsets"/> false), by a client talking to the SVM directly. False for non-TCP and malformed
    /// frames, for a connection whose handshake has not given its offset yet (the SVM's SYN or SYN-ACK included), and
    /// for untracked connections once an entry whose offset was not known to be 0 has been evicted or expired since the
    /// last checkpoint (<see cref="OffsetsLost"/>; such a connection cannot be told apart from one that predates it).
    /// Callers that keep translated output (e.g. <see cref="UnackedOutput"/>) must only keep frames for which this is true.
    /// </returns>
    public bool RewriteFromSvm(Span<byte> frame)
    {
        if (!PacketView.TryParse(frame, out PacketView v, out _) || !v.IsTcp)
        {
            return false;
        }
        Key key = new(v.SrcAddress, v.DstAddress, v.SrcPort, v.DstPort, v.IsIPv6);
        long now = _time.GetTimestamp();
        if (now - _lastExpire >= _time.TimestampFrequency)
        {
            // About once a second (amortised): drop expired entries.
            _lastExpire = now;
            Expire();
        }
        _table.TryGetValue(key, out Entry? e);
        if (v.Has(TcpFlags.Syn))
        {
            if (e is not null && (!e.IsnKnown || e.SvmIsn != v.Seq))
            {
                // A different handshake on this 4-tuple (port reuse): start over.
                Remove(e);
                e = null;
            }
            if (e is null)
            {
                if (!LearnOffsets)
                {
                    return true; // after failover the SVM's space is the client's for new connections
                }
                e = Add(key, now);
                e.IsnKnown = true;
                e.SvmIsn = v.Seq;
            }
        }
        if (e is null)
        {
            return !_untrackedUnsure;
        }
        e.LastActivity = now;
        if (v.Has(TcpFlags.Rst))
        {
            e.Rst = true;
        }
        if (v.Has(TcpFlags.Fin))
        {
            e.SvmFin = true;
        }
        if (!e.OffsetKnown)
        {
            return false;
        }
        if (e.Offset == 0)
        {
            return true;
        }
        Span<byte> tcp = frame.Slice(v.L4Offset);
        ushort ck = BinaryPrimitives.ReadUInt16BigEndian(tcp.Slice(16, 2));
        uint oldSeq = v.Seq;
        uint newSeq = oldSeq + e.Offset;
        BinaryPrimitives.WriteUInt32BigEndian(tcp.Slice(4, 4), newSeq);
        BinaryPrimitives.WriteUInt16BigEndian(tcp.Slice(16, 2), Checksum.Update32(ck, oldSeq, newSeq));
        RewrittenFrames++;
        return true;
    }

    /// <summary>
    /// After the SVM loaded a checkpoint it holds the PVM's TCP state: every offset becomes 0 and ISNs of handshakes in
    /// progress are forgotten, so the table is emptied.
    /// </summary>
    public void ResetAfterCheckpoint()
    {
        foreach (KeyValuePair<Key, Entry> kv in _table)
        {
            _pool.Push(kv.Value);
        }
        _table.Clear();
        _untrackedUnsure = false;
    }

    private Entry Add(Key key, long now)
    {
        if (_table.Count >= _maxConnections)
        {
            Evict(now);
        }
        Entry e = _pool.Count > 0 ? _pool.Pop() : new Entry();
        e.Key = key;
        e.IsnKnown = e.OffsetKnown = false;
        e.SvmIsn = e.Offset = 0;
        e.ClientFin = e.SvmFin = e.Rst = false;
        e.LastActivity = now;
        _table.Add(key, e);
        return e;
    }

    private void Remove(Entry e)
    {
        _table.Remove(e.Key);
        _pool.Push(e);
    }

    /// <summary>Removes an entry by eviction or expiry, noting when an open connection's non-zero or unknown offset is lost.</summary>
    private void Drop(Entry e)
    {
        bool closed = e.Rst || (e.ClientFin && e.SvmFin);
        if (!closed && !(e.OffsetKnown && e.Offset == 0))
        {
            _untrackedUnsure = true;
            OffsetsLost++;
        }
        Remove(e);
    }

    /// <summary>
    /// The table is full: removes closed and idle entries; if there are none, the least recently used entry whose
    /// offset is 0 (forgetting it changes no packet), and only if every entry carries an offset, the least recently used.
    /// </summary>
    private void Evict(long now)
    {
        Entry? lru = null, lruZero = null;
        int removed = 0;
        foreach (KeyValuePair<Key, Entry> kv in _table)
        {
            Entry e = kv.Value;
            bool closed = e.Rst || (e.ClientFin && e.SvmFin);
            long idle = now - e.LastActivity;
            if (closed || idle >= _idleTicks)
            {
                Drop(e);
                removed++;
            }
            else
            {
                if (lru is null || e.LastActivity < lru.LastActivity)
                {
                    lru = e;
                }
                if (e.OffsetKnown && e.Offset == 0 && (lruZero is null || e.LastActivity < lruZero.LastActivity))
                {
                    lruZero = e;
                }
            }
        }
        if (removed == 0 && (lruZero ?? lru) is { } victim)
        {
            Drop(victim);
            removed = 1;
        }
        Evictions += removed;
    }

    /// <summary>
    /// Removes entries closed (FIN both ways or RST) and idle for the closed-idle time, or idle for the idle time.
    /// Also runs automatically about once a second from <see cref="RewriteFromSvm"/>. O(entries).
    /// </summary>
    public void Expire()
    {
        long now = _time.GetTimestamp();
        foreach (KeyValuePair<Key, Entry> kv in _table)
        {
            Entry e = kv.Value;
            bool closed = e.Rst || (e.ClientFin && e.SvmFin);
            long idle = now - e.LastActivity;
            // After failover a connection that needs translation is kept however long it idles (TCP keepalives may be
            // hours apart); it goes when it closes.
            bool pinned = !LearnOffsets && e.OffsetKnown && e.Offset != 0;
            if ((closed && idle >= _closedIdleTicks) || (idle >= _idleTicks && !pinned))
            {
                Drop(e);
            }
        }
    }
}
