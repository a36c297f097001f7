using System.Buffers.Binary;

namespace Colo.Proxy.Fuzz;

/// <summary>Builds well-formed Ethernet frames (checksums correct) for the seed corpus.</summary>
internal static class Frames
{
    public static readonly byte[] GuestMac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    public static readonly byte[] ClientMac = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];

    public const uint Guest4 = 0x0A000002; // 10.0.0.2
    public const uint Client4 = 0x0A000009; // 10.0.0.9
    public static readonly byte[] Guest6 = Ip6(0x2001_0db8_0000_0000, 2);
    public static readonly byte[] Client6 = Ip6(0x2001_0db8_0000_0000, 9);

    public const byte Fin = 0x01, Syn = 0x02, Rst = 0x04, Psh = 0x08, Ack = 0x10;

    public static byte[] Ip6(ulong prefix, ulong iid)
    {
        var a = new byte[16];
        BinaryPrimitives.WriteUInt64BigEndian(a, prefix);
        BinaryPrimitives.WriteUInt64BigEndian(a.AsSpan(8), iid);
        return a;
    }

    /// <summary>Ethernet header (optionally with stacked tags: (TPID, TCI) outermost first) + payload.</summary>
    public static byte[] Ether(ushort etherType, ReadOnlySpan<byte> payload, bool fromGuest = true, params (ushort Tpid, ushort Tci)[] tags)
    {
        var f = new byte[14 + 4 * tags.Length + payload.Length];
        (fromGuest ? ClientMac : GuestMac).CopyTo(f, 0);
        (fromGuest ? GuestMac : ClientMac).CopyTo(f, 6);
        int o = 12;
        foreach ((ushort tpid, ushort tci) in tags)
        {
            BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(o), tpid);
            BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(o + 2), tci);
            o += 4;
        }
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(o), etherType);
        payload.CopyTo(f.AsSpan(o + 2));
        return f;
    }

    /// <summary>A TCP header (+options padded to 4 bytes) and payload; checksum left 0 (set by the IP wrappers).</summary>
    public static byte[] Tcp(ushort sport, ushort dport, uint seq, uint ack, byte flags, ReadOnlySpan<byte> options = default,
        ReadOnlySpan<byte> payload = default, ushort window = 64240)
    {
        int optLen = (options.Length + 3) & ~3;
        var t = new byte[20 + optLen + payload.Length];
        BinaryPrimitives.WriteUInt16BigEndian(t, sport);
        BinaryPrimitives.WriteUInt16BigEndian(t.AsSpan(2), dport);
        BinaryPrimitives.WriteUInt32BigEndian(t.AsSpan(4), seq);
        BinaryPrimitives.WriteUInt32BigEndian(t.AsSpan(8), ack);
        t[12] = (byte)((20 + optLen) / 4 << 4);
        t[13] = flags;
        BinaryPrimitives.WriteUInt16BigEndian(t.AsSpan(14), window);
        options.CopyTo(t.AsSpan(20));
        payload.CopyTo(t.AsSpan(20 + optLen));
        return t;
    }

    public static byte[] Udp(ushort sport, ushort dport, ReadOnlySpan<byte> payload)
    {
        var u = new byte[8 + payload.Length];
        BinaryPrimitives.WriteUInt16BigEndian(u, sport);
        BinaryPrimitives.WriteUInt16BigEndian(u.AsSpan(2), dport);
        BinaryPrimitives.WriteUInt16BigEndian(u.AsSpan(4), (ushort)u.Length);
        payload.CopyTo(u.AsSpan(8));
        return u;
    }

    /// <summary>ICMP (v4) message with its checksum (no pseudo-header).</summary>
    public static byte[] Icmp(byte type, byte code, ushort id, ushort seq, ReadOnlySpan<byte> data)
    {
        var m = new byte[8 + data.Length];
        m[0] = type;
        m[1] = code;
        BinaryPrimitives.WriteUInt16BigEndian(m.AsSpan(4), id);
        BinaryPrimitives.WriteUInt16BigEndian(m.AsSpan(6), seq);
        data.CopyTo(m.AsSpan(8));
        BinaryPrimitives.WriteUInt16BigEndian(m.AsSpan(2), (ushort)~Harness.Fold(Harness.Sum(m, 0)));
        return m;
    }

    /// <summary>ICMPv6 message; its checksum is set by <see cref="Ipv6"/>.</summary>
    public static byte[] Icmp6(byte type, byte code, ReadOnlySpan<byte> body)
    {
        var m = new byte[4 + body.Length];
        m[0] = type;
        m[1] = code;
        body.CopyTo(m.AsSpan(4));
        return m;
    }

    public static byte[] Arp(ushort op, uint senderIp, ReadOnlySpan<byte> senderMac, uint targetIp, ReadOnlySpan<byte> targetMac)
    {
        var a = new byte[28];
        BinaryPrimitives.WriteUInt16BigEndian(a, 1);
        BinaryPrimitives.WriteUInt16BigEndian(a.AsSpan(2), 0x0800);
        a[4] = 6;
        a[5] = 4;
        BinaryPrimitives.WriteUInt16BigEndian(a.AsSpan(6), op);
        senderMac.CopyTo(a.AsSpan(8));
        BinaryPrimitives.WriteUInt32BigEndian(a.AsSpan(14), senderIp);
        targetMac.CopyTo(a.AsSpan(18));
        BinaryPrimitives.WriteUInt32BigEndian(a.AsSpan(24), targetIp);
        return a;
    }

    /// <summary>IPv4 packet; sets the header checksum and, for unfragmented TCP/UDP, the transport checksum.</summary>
    public static byte[] Ipv4(uint src, uint dst, byte proto, ReadOnlySpan<byte> l4, ushort id = 1, ushort frag = 0x4000,
        byte ttl = 64, ReadOnlySpan<byte> options = default)
    {
        int ihl = 20 + ((options.Length + 3) & ~3);
        var p = new byte[ihl + l4.Length];
        p[0] = (byte)(0x40 | ihl / 4);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(2), (ushort)p.Length);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(4), id);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(6), frag);
        p[8] = ttl;
        p[9] = proto;
        BinaryPrimitives.WriteUInt32BigEndian(p.AsSpan(12), src);
        BinaryPrimitives.WriteUInt32BigEndian(p.AsSpan(16), dst);
        options.CopyTo(p.AsSpan(20));
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(10), (ushort)~Harness.Fold(Harness.Sum(p.AsSpan(0, ihl), 0)));
        Span<byte> seg = p.AsSpan(ihl);
        l4.CopyTo(seg);
        int ck = proto switch { 6 => 16, 17 => 6, _ => -1 };
        if (ck >= 0 && (frag & 0x3FFF) == 0 && seg.Length >= ck + 2)
        {
            ulong sum = Harness.Sum(p.AsSpan(12, 8), (ulong)proto + (ulong)seg.Length);
            BinaryPrimitives.WriteUInt16BigEndian(seg.Slice(ck), (ushort)~Harness.Fold(Harness.Sum(seg, sum)));
        }
        return p;
    }

    /// <summary>
    /// IPv6 packet. <paramref name="ext"/> is a chain of extension headers, each (type, total length in bytes); their
    /// next-header fields are filled in, the last one pointing at <paramref name="proto"/>. Fragment headers get
    /// <paramref name="fragField"/> (offset/flags) and id 0x1234. Sets the TCP/UDP/ICMPv6 checksum of unfragmented packets.
    /// </summary>
    public static byte[] Ipv6(ReadOnlySpan<byte> src, ReadOnlySpan<byte> dst, byte proto, ReadOnlySpan<byte> l4,
        (byte Type, int Length)[]? ext = null, ushort fragField = 0, byte hopLimit = 64)
    {
        ext ??= [];
        int extLen = 0;
        foreach ((byte _, int len) in ext)
        {
            extLen += len;
        }
        var p = new byte[40 + extLen + l4.Length];
        p[0] = 0x60;
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(4), (ushort)(extLen + l4.Length));
        p[6] = ext.Length > 0 ? ext[0].Type : proto;
        p[7] = hopLimit;
        src.CopyTo(p.AsSpan(8));
        dst.CopyTo(p.AsSpan(24));
        int o = 40;
        bool fragment = false;
        for (int i = 0; i < ext.Length; i++)
        {
            (byte type, int len) = ext[i];
            p[o] = i + 1 < ext.Length ? ext[i + 1].Type : proto;
            switch (type)
            {
                case 44:
                    BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(o + 2), fragField);
                    BinaryPrimitives.WriteUInt32BigEndian(p.AsSpan(o + 4), 0x1234);
                    fragment |= (fragField & 0xFFF9) != 0;
                    break;
                case 51:
                    p[o + 1] = (byte)(len / 4 - 2);
                    break;
                default:
                    p[o + 1] = (byte)(len / 8 - 1);
                    if (type == 43)
                    {
                        p[o + 2] = 4; // routing type 4 (segment routing), 0 segments left
                    }
                    break;
            }
            o += len;
        }
        Span<byte> seg = p.AsSpan(o);
        l4.CopyTo(seg);
        int ck = proto switch { 6 => 16, 17 => 6, 58 => 2, _ => -1 };
        if (ck >= 0 && !fragment && seg.Length >= ck + 2)
        {
            ulong sum = Harness.Sum(p.AsSpan(8, 32), (ulong)proto + (ulong)seg.Length);
            BinaryPrimitives.WriteUInt16BigEndian(seg.Slice(ck), (ushort)~Harness.Fold(Harness.Sum(seg, sum)));
        }
        return p;
    }

    // ---- shorthands

    public static byte[] Tcp4(bool fromGuest, uint seq, uint ack, byte flags, ReadOnlySpan<byte> payload = default,
        ReadOnlySpan<byte> options = default, ushort guestPort = 80, ushort clientPort = 40000, ushort ipId = 1, byte ttl = 64,
        params (ushort, ushort)[] tags)
    {
        byte[] tcp = fromGuest
            ? Tcp(guestPort, clientPort, seq, ack, flags, options, payload)
            : Tcp(clientPort, guestPort, seq, ack, flags, options, payload);
        byte[] ip = fromGuest ? Ipv4(Guest4, Client4, 6, tcp, ipId, ttl: ttl) : Ipv4(Client4, Guest4, 6, tcp, ipId, ttl: ttl);
        return Ether(0x0800, ip, fromGuest, tags);
    }

    public static byte[] Tcp6(bool fromGuest, uint seq, uint ack, byte flags, ReadOnlySpan<byte> payload = default,
        ReadOnlySpan<byte> options = default, (byte, int)[]? ext = null, ushort guestPort = 443, ushort clientPort = 50000)
    {
        byte[] tcp = fromGuest
            ? Tcp(guestPort, clientPort, seq, ack, flags, options, payload)
            : Tcp(clientPort, guestPort, seq, ack, flags, options, payload);
        byte[] ip = fromGuest ? Ipv6(Guest6, Client6, 6, tcp, ext) : Ipv6(Client6, Guest6, 6, tcp, ext);
        return Ether(0x86DD, ip, fromGuest);
    }

    public static byte[] Udp4(bool fromGuest, ReadOnlySpan<byte> payload, ushort guestPort = 53, ushort clientPort = 5353,
        params (ushort, ushort)[] tags)
    {
        byte[] udp = fromGuest ? Udp(guestPort, clientPort, payload) : Udp(clientPort, guestPort, payload);
        byte[] ip = fromGuest ? Ipv4(Guest4, Client4, 17, udp) : Ipv4(Client4, Guest4, 17, udp);
        return Ether(0x0800, ip, fromGuest, tags);
    }

    /// <summary>TCP options: MSS 1460, SACK permitted, timestamps, window scale 7 (SYN/SYN-ACK style).</summary>
    public static byte[] SynOptions(uint tsVal, uint tsEcr)
    {
        var o = new byte[20];
        o[0] = 2; o[1] = 4; BinaryPrimitives.WriteUInt16BigEndian(o.AsSpan(2), 1460);
        o[4] = 4; o[5] = 2;
        o[6] = 8; o[7] = 10;
        BinaryPrimitives.WriteUInt32BigEndian(o.AsSpan(8), tsVal);
        BinaryPrimitives.WriteUInt32BigEndian(o.AsSpan(12), tsEcr);
        o[16] = 1; o[17] = 3; o[18] = 3; o[19] = 7;
        return o;
    }

    /// <summary>NOP NOP timestamp (12 bytes).</summary>
    public static byte[] TsOption(uint tsVal, uint tsEcr)
    {
        var o = new byte[12];
        o[0] = 1; o[1] = 1; o[2] = 8; o[3] = 10;
        BinaryPrimitives.WriteUInt32BigEndian(o.AsSpan(4), tsVal);
        BinaryPrimitives.WriteUInt32BigEndian(o.AsSpan(8), tsEcr);
        return o;
    }

    /// <summary>SACK option with the given blocks, prefixed by <paramref name="nops"/> NOPs (2 aligns the edges).</summary>
    public static byte[] SackOption(int nops, params (uint Left, uint Right)[] blocks)
    {
        var o = new byte[nops + 2 + 8 * blocks.Length];
        o.AsSpan(0, nops).Fill(1);
        o[nops] = 5;
        o[nops + 1] = (byte)(2 + 8 * blocks.Length);
        for (int i = 0; i < blocks.Length; i++)
        {
            BinaryPrimitives.WriteUInt32BigEndian(o.AsSpan(nops + 2 + 8 * i), blocks[i].Left);
            BinaryPrimitives.WriteUInt32BigEndian(o.AsSpan(nops + 6 + 8 * i), blocks[i].Right);
        }
        return o;
    }

    public static byte[] Bytes(string s) => System.Text.Encoding.ASCII.GetBytes(s);
}
