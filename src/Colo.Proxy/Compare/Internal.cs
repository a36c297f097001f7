using System.Buffers;
using System.Runtime.CompilerServices;

namespace Colo.Proxy;

/// <summary>RFC 1982 serial-number arithmetic on 32-bit TCP sequence/acknowledgement numbers.</summary>
internal static class SeqMath
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool Lt(uint a, uint b) => (int)(a - b) < 0;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool Le(uint a, uint b) => (int)(a - b) <= 0;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool Gt(uint a, uint b) => (int)(a - b) > 0;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool Ge(uint a, uint b) => (int)(a - b) >= 0;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Min(uint a, uint b) => Lt(a, b) ? a : b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Max(uint a, uint b) => Gt(a, b) ? a : b;
}

/// <summary>Folds 128-bit addresses and ports into a hash code (multiply-xor; no allocation, no loops).</summary>
internal static class KeyHash
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Of(UInt128 a, UInt128 b, uint ports, uint extra)
    {
        ulong h = (ulong)a * 0x9E3779B97F4A7C15UL
            ^ (ulong)(a >> 64) * 0xC2B2AE3D27D4EB4FUL
            ^ (ulong)b * 0x165667B19E3779F9UL
            ^ (ulong)(b >> 64) * 0x85EBCA77C2B2AE63UL
            ^ (ports | (ulong)extra << 32) * 0x27D4EB2F165667C5UL;
        return (int)(h ^ (h >> 32));
    }
}

/// <summary>
/// TCP connection key, oriented from the guest: guest address/port, peer address/port. Addresses are 128-bit: IPv6 as
/// is, IPv4 mapped to ::ffff:a.b.c.d; <see cref="IPv6"/> keeps an IPv6 packet that carries an IPv4-mapped address
/// apart from IPv4.
/// </summary>
internal readonly record struct ConnKey(UInt128 GuestIp, UInt128 PeerIp, ushort GuestPort, ushort PeerPort, bool IPv6)
{
    public bool Equals(ConnKey other) =>
        GuestIp == other.GuestIp && PeerIp == other.PeerIp && GuestPort == other.GuestPort && PeerPort == other.PeerPort && IPv6 == other.IPv6;

    public override int GetHashCode() => KeyHash.Of(GuestIp, PeerIp, (uint)GuestPort << 16 | PeerPort, IPv6 ? 1u : 0u);
}

/// <summary>
/// Non-TCP flow key: what kind of packet plus addresses/ports that identify a pairing queue. Addresses are 128-bit
/// (IPv4 mapped to ::ffff:a.b.c.d; the kind tells the family). <see cref="EtherType"/> holds the ethertype, or the
/// fragment field for IP fragments.
/// </summary>
internal readonly record struct FlowKey(byte Kind, byte Protocol, ushort EtherType, UInt128 Src, UInt128 Dst, ushort SrcPort, ushort DstPort)
{
    public bool Equals(FlowKey other) =>
        Src == other.Src && Dst == other.Dst && SrcPort == other.SrcPort && DstPort == other.DstPort &&
        Kind == other.Kind && Protocol == other.Protocol && EtherType == other.EtherType;

    public override int GetHashCode() =>
        KeyHash.Of(Src, Dst, (uint)SrcPort << 16 | DstPort, (uint)Kind << 24 | (uint)Protocol << 16 | EtherType);
}

/// <summary>A held frame or buffered segment, pooled. Buffer is rented from <see cref="ArrayPool{T}.Shared"/>.</summary>
internal sealed class HeldFrame
{
    public byte[] Buffer = Array.Empty<byte>();
    public int Length;
    public long Arrival;
    /// <summary>PVM arrival ordinal (monotonic), compared with <see cref="CheckpointMark.Ordinal"/>.</summary>
    public long Ordinal;
    /// <summary>Global arrival list (PVM list or SVM list).</summary>
    public HeldFrame? GPrev, GNext;
    /// <summary>Per-flow FIFO.</summary>
    public HeldFrame? Next;
    /// <summary>Owning connection (TCP) or flow (non-TCP).</summary>
    public object? Owner;

    // TCP
    public uint Seq;
    public uint Ack;
    public TcpFlags Flags;
    public int PayloadOffset;
    public int PayloadLength;
    public bool NotAppended;

    // Non-TCP compare region inside Buffer, and a hole in it that is not compared (relative offset and length;
    // length 0: none), e.g. the ICMPv6 checksum or an IPv6 fragment's identification.
    public int KeyOffset;
    public int KeyLength;
    public int KeyHoleOffset;
    public int KeyHoleLength;

    public ReadOnlySpan<byte> Span => new(Buffer, 0, Length);
    public ReadOnlySpan<byte> Key => new(Buffer, KeyOffset, KeyLength);
    public ReadOnlySpan<byte> Payload => new(Buffer, PayloadOffset, PayloadLength);
}

/// <summary>Intrusive doubly-linked list over <see cref="HeldFrame.GPrev"/>/<see cref="HeldFrame.GNext"/>, in arrival order.</summary>
internal struct FrameList
{
    public HeldFrame? Head;
    public HeldFrame? Tail;

    public void Add(HeldFrame f)
    {
        f.GNext = null;
        f.GPrev = Tail;
        if (Tail is null)
        {
            Head = f;
        }
        else
        {
            Tail.GNext = f;
        }
        Tail = f;
    }

    public void Remove(HeldFrame f)
    {
        if (f.GPrev is null)
        {
            Head = f.GNext;
        }
        else
        {
            f.GPrev.GNext = f.GNext;
        }
        if (f.GNext is null)
        {
            Tail = f.GPrev;
        }
        else
        {
            f.GNext.GPrev = f.GPrev;
        }
        f.GPrev = f.GNext = null;
    }
}

/// <summary>Singly-linked FIFO over <see cref="HeldFrame.Next"/>.</summary>
internal struct FrameQueue
{
    public HeldFrame? Head;
    public HeldFrame? Tail;

    public readonly bool IsEmpty => Head is null;

    public void Enqueue(HeldFrame f)
    {
        f.Next = null;
        if (Tail is null)
        {
            Head = f;
        }
        else
        {
            Tail.Next = f;
        }
        Tail = f;
    }

    public HeldFrame? Dequeue()
    {
        HeldFrame? h = Head;
        if (h is not null)
        {
            Head = h.Next;
            if (Head is null)
            {
                Tail = null;
            }
            h.Next = null;
        }
        return h;
    }

    /// <summary>Removes a node that follows <paramref name="prev"/> (null: the head).</summary>
    public void RemoveAfter(HeldFrame? prev, HeldFrame f)
    {
        if (prev is null)
        {
            Head = f.Next;
        }
        else
        {
            prev.Next = f.Next;
        }
        if (Tail == f)
        {
            Tail = prev;
        }
        f.Next = null;
    }
}

/// <summary>
/// Byte ring holding the bytes by which one side's stream is ahead of the other (from the matched end on).
/// Backing store rented from the shared pool, returned when empty.
/// </summary>
internal struct ByteRing
{
    private byte[]? _buf;
    private int _head;
    public int Count;

    public readonly int Capacity => _buf?.Length ?? 0;

    /// <summary>Appends; returns the change in capacity (bytes newly rented, for held-bytes accounting).</summary>
    public int Append(ReadOnlySpan<byte> data)
    {
        int grown = 0;
        int need = Count + data.Length;
        if (_buf is null || need > _buf.Length)
        {
            int cap = Math.Max(4096, _buf is null ? 0 : _buf.Length * 2);
            while (cap < need)
            {
                cap *= 2;
            }
            byte[] nb = ArrayPool<byte>.Shared.Rent(cap);
            if (_buf is not null)
            {
                CopyTo(nb.AsSpan(0, Count));
                grown -= _buf.Length;
                ArrayPool<byte>.Shared.Return(_buf);
            }
            grown += nb.Length;
            _buf = nb;
            _head = 0;
        }
        int tail = (_head + Count) % _buf.Length;
        int first = Math.Min(data.Length, _buf.Length - tail);
        data.Slice(0, first).CopyTo(_buf.AsSpan(tail));
        data.Slice(first).CopyTo(_buf.AsSpan(0));
        Count += data.Length;
        return grown;
    }

    private readonly void CopyTo(Span<byte> dest)
    {
        int first = Math.Min(Count, _buf!.Length - _head);
        _buf.AsSpan(_head, first).CopyTo(dest);
        _buf.AsSpan(0, Count - first).CopyTo(dest.Slice(first));
    }

    /// <summary>True when the first <c>data.Length</c> bytes equal <paramref name="data"/> (requires Count ≥ length).</summary>
    public readonly bool StartsWith(ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty)
        {
            return true; // also when the ring has no buffer yet (only a FIN put one side ahead)
        }
        int first = Math.Min(data.Length, _buf!.Length - _head);
        if (!_buf.AsSpan(_head, first).SequenceEqual(data.Slice(0, first)))
        {
            return false;
        }
        return _buf.AsSpan(0, data.Length - first).SequenceEqual(data.Slice(first));
    }

    /// <summary>Drops <paramref name="n"/> bytes from the front; returns bytes of capacity released.</summary>
    public int Consume(int n)
    {
        Count -= n;
        if (Count == 0)
        {
            return Clear();
        }
        _head = (_head + n) % _buf!.Length;
        return 0;
    }

    /// <summary>Empties and returns the buffer; returns bytes of capacity released.</summary>
    public int Clear()
    {
        int released = 0;
        if (_buf is not null)
        {
            released = _buf.Length;
            ArrayPool<byte>.Shared.Return(_buf);
            _buf = null;
        }
        _head = 0;
        Count = 0;
        return released;
    }
}

/// <summary>Compare state of one guest TCP connection (guest→peer direction only: both VMs' output).</summary>
internal sealed class TcpConnection
{
    public ConnKey Key;
    public FrameQueue Held;          // PVM frames held, arrival order
    public FrameQueue SvmOoo;        // SVM out-of-order segments
    public int SvmOooCount;
    public int PvmOooCount;

    public bool StreamInit;
    public uint PvmEnd, SvmEnd;      // next expected sequence per side (contiguous)
    public ByteRing Ahead;           // bytes [min(PvmEnd,SvmEnd), max(...)) of the side ahead

    public bool PvmMaxEndSet;
    public uint PvmMaxEnd;           // highest sequence end the PVM has sent (for the post-checkpoint base)
    public bool PvmAckSet;
    public uint PvmMaxAck;
    public bool SvmAckSet;
    public uint SvmMaxAck;

    public TcpFlags PvmSyn, SvmSyn;  // SYN|ACK bits of the handshake segment sent, None if not seen
    public bool PvmFinSet, SvmFinSet;
    public uint PvmFinSeq, SvmFinSeq;
    public bool PvmRst, SvmRst;
    public bool Diverged;

    public long LastActivity;
    public long ClosedAt;            // 0 = open
    public long HeldBytes;           // this connection's share of the held bytes (frames + ahead-bytes capacity)
    public uint PvmRstSeq, SvmRstSeq; // sequence number of each side's RST (valid when PvmRst / SvmRst)

    // PVM-side state snapshot taken by MarkCheckpoint.
    public long MarkSerial;
    public bool MarkEndSet, MarkAckSet, MarkFinSet, MarkRst;
    public uint MarkEnd, MarkAck, MarkFinSeq;
    public TcpFlags MarkSyn;

    // What has already reached the client (survives commits): highest sequence end and handshake flags released.
    public bool ReleasedEndSet;
    public uint ReleasedEnd;
    public TcpFlags ReleasedSyn;

    // SVM-pending list (SVM output not yet matched by the PVM), ordered by PendingSince.
    public long PendingSince;
    public TcpConnection? PendPrev, PendNext;

    /// <summary>Forgets everything (new connection on this 4-tuple).</summary>
    public void ResetAll()
    {
        ResetCompareState();
        MarkSerial = 0;
        ReleasedEndSet = false;
        ReleasedEnd = 0;
        ReleasedSyn = TcpFlags.None;
    }

    /// <summary>Forgets compare state; keeps what was released and the mark snapshot.</summary>
    public void ResetCompareState()
    {
        StreamInit = false;
        PvmEnd = SvmEnd = 0;
        PvmOooCount = 0;
        PvmMaxEndSet = PvmAckSet = SvmAckSet = false;
        PvmMaxEnd = PvmMaxAck = SvmMaxAck = 0;
        PvmSyn = SvmSyn = TcpFlags.None;
        PvmFinSet = SvmFinSet = false;
        PvmFinSeq = SvmFinSeq = 0;
        PvmRst = SvmRst = false;
        Diverged = false;
        ClosedAt = 0;
    }
}

/// <summary>Pairing queues of one non-TCP flow.</summary>
internal sealed class OtherFlow
{
    public FlowKey Key;
    public FrameQueue Pvm;
    public FrameQueue Svm;
}
