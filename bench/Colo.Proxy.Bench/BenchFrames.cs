using System.Buffers.Binary;

namespace Colo.Proxy.Bench;

/// <summary>
/// Builds the untagged IPv4/TCP frames the benchmarks feed to the proxy (own checksum code, independent of
/// <see cref="Checksum"/>). Layout: Ethernet (14) + IPv4 without options (20) + TCP without options (20) + payload.
/// </summary>
public static class BenchFrames
{
    /// <summary>The guest's MAC address.</summary>
    public static readonly byte[] GuestMac = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
    /// <summary>The client's MAC address.</summary>
    public static readonly byte[] ClientMac = { 0x52, 0x54, 0x00, 0xAB, 0xCD, 0xEF };
    /// <summary>10.0.0.2 (the guest; never put on the wire: frames only travel over in-process unix sockets).</summary>
    public const uint GuestIp = 0x0A000002;
    /// <summary>10.0.0.1 (the client).</summary>
    public const uint ClientIp = 0x0A000001;
    /// <summary>The guest's TCP port.</summary>
    public const ushort GuestPort = 7;
    /// <summary>The client's TCP port.</summary>
    public const ushort ClientPort = 40000;

    /// <summary>Offset of the IPv4 header.</summary>
    public const int IpOffset = 14;
    /// <summary>Offset of the TCP header.</summary>
    public const int TcpOffset = 34;
    /// <summary>Offset of the TCP sequence number.</summary>
    public const int SeqOffset = TcpOffset + 4;
    /// <summary>Offset of the TCP acknowledgement number.</summary>
    public const int AckOffset = TcpOffset + 8;
    /// <summary>Offset of the TCP payload.</summary>
    public const int PayloadOffset = 54;

    /// <summary>TCP flag bits.</summary>
    public const byte Fin = 0x01, Syn = 0x02, Psh = 0x08, Ack = 0x10;

    /// <summary>Builds one TCP frame with valid IPv4 header and TCP checksums.</summary>
    /// <param name="fromGuest">True: guest → client; false: client → guest.</param>
    /// <param name="seq">Sequence number.</param>
    /// <param name="ack">Acknowledgement number.</param>
    /// <param name="flags">TCP flags.</param>
    /// <param name="payload">Payload bytes.</param>
    /// <param name="ipId">IPv4 identification.</param>
    /// <param name="ttl">IPv4 TTL.</param>
    /// <returns>The frame.</returns>
    public static byte[] Tcp(bool fromGuest, uint seq, uint ack, byte flags, ReadOnlySpan<byte> payload, ushort ipId = 1, byte ttl = 64)
    {
        var f = new byte[PayloadOffset + payload.Length];
        (fromGuest ? ClientMac : GuestMac).CopyTo(f, 0);
        (fromGuest ? GuestMac : ClientMac).CopyTo(f, 6);
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), 0x0800);
        Span<byte> ip = f.AsSpan(IpOffset, 20);
        ip[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(ip.Slice(2), (ushort)(40 + payload.Length));
        BinaryPrimitives.WriteUInt16BigEndian(ip.Slice(4), ipId);
        BinaryPrimitives.WriteUInt16BigEndian(ip.Slice(6), 0x4000);
        ip[8] = ttl;
        ip[9] = 6;
        BinaryPrimitives.WriteUInt32BigEndian(ip.Slice(12), fromGuest ? GuestIp : ClientIp);
        BinaryPrimitives.WriteUInt32BigEndian(ip.Slice(16), fromGuest ? ClientIp : GuestIp);
        Span<byte> t = f.AsSpan(TcpOffset);
        BinaryPrimitives.WriteUInt16BigEndian(t, fromGuest ? GuestPort : ClientPort);
        BinaryPrimitives.WriteUInt16BigEndian(t.Slice(2), fromGuest ? ClientPort : GuestPort);
        BinaryPrimitives.WriteUInt32BigEndian(t.Slice(4), seq);
        BinaryPrimitives.WriteUInt32BigEndian(t.Slice(8), ack);
        t[12] = 5 << 4;
        t[13] = flags;
        BinaryPrimitives.WriteUInt16BigEndian(t.Slice(14), 65535);
        payload.CopyTo(t.Slice(20));
        FixChecksums(f);
        return f;
    }

    /// <summary>Recomputes the IPv4 header and TCP checksums of a frame built by <see cref="Tcp"/>.</summary>
    /// <param name="f">The frame.</param>
    public static void FixChecksums(Span<byte> f)
    {
        Span<byte> ip = f.Slice(IpOffset, 20);
        ip[10] = ip[11] = 0;
        BinaryPrimitives.WriteUInt16BigEndian(ip.Slice(10), Fold(Sum(ip, 0)));
        Span<byte> t = f.Slice(TcpOffset);
        t[16] = t[17] = 0;
        uint pseudo = Sum(ip.Slice(12, 8), 0) + 6u + (uint)t.Length;
        BinaryPrimitives.WriteUInt16BigEndian(t.Slice(16), Fold(Sum(t, pseudo)));
    }

    /// <summary>True when the frame's IPv4 header and TCP checksums verify.</summary>
    /// <param name="f">A frame laid out as by <see cref="Tcp"/>.</param>
    /// <returns>Whether both verify.</returns>
    public static bool ChecksumsValid(ReadOnlySpan<byte> f)
    {
        ReadOnlySpan<byte> ip = f.Slice(IpOffset, 20);
        ReadOnlySpan<byte> t = f.Slice(TcpOffset);
        uint pseudo = Sum(ip.Slice(12, 8), 0) + 6u + (uint)t.Length;
        return Fold(Sum(ip, 0)) == 0 && Fold(Sum(t, pseudo)) == 0;
    }

    /// <summary>A deterministic payload of <paramref name="length"/> bytes.</summary>
    /// <param name="length">Bytes.</param>
    /// <returns>The payload.</returns>
    public static byte[] Payload(int length)
    {
        var p = new byte[length];
        for (int i = 0; i < p.Length; i++)
        {
            p[i] = (byte)('a' + i % 26);
        }
        return p;
    }

    private static uint Sum(ReadOnlySpan<byte> data, uint initial)
    {
        ulong s = initial;
        int i = 0;
        for (; i + 1 < data.Length; i += 2)
        {
            s += (uint)(data[i] << 8 | data[i + 1]);
        }
        if (i < data.Length)
        {
            s += (uint)data[i] << 8;
        }
        while (s > 0xFFFF)
        {
            s = (s & 0xFFFF) + (s >> 16);
        }
        return (uint)s;
    }

    private static ushort Fold(uint s) => (ushort)~s;
}
