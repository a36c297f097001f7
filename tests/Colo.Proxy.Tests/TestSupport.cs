using System.Buffers.Binary;

namespace Colo.Proxy.Tests;

/// <summary>Independent frame builder (own checksum code, not the production helpers).</summary>
internal static class Frames
{
    public static readonly byte[] GuestMac = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
    public static readonly byte[] ClientMac = { 0x52, 0x54, 0x00, 0xAB, 0xCD, 0xEF };
    public const uint GuestIp = 0x0A000002;  // 10.0.0.2
    public const uint ClientIp = 0x0A000001; // 10.0.0.1
    public const ushort GuestPort = 80;
    public const ushort ClientPort = 40000;

    public const byte FIN = 0x01, SYN = 0x02, RST = 0x04, PSH = 0x08, ACK = 0x10;

    public static ushort RefChecksum(ReadOnlySpan<byte> data, uint initial = 0)
    {
        uint sum = initial;
        for (int i = 0; i < data.Length; i += 2)
        {
            uint w = (uint)data[i] << 8;
            if (i + 1 < data.Length)
            {
                w |= data[i + 1];
            }
            sum += w;
            while (sum > 0xFFFF)
            {
                sum = (sum & 0xFFFF) + (sum >> 16);
            }
        }
        return (ushort)~sum;
    }

    public static uint PseudoSum(uint src, uint dst, byte proto, int len)
    {
        uint s = (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + proto + (uint)len;
        while (s > 0xFFFF)
        {
            s = (s & 0xFFFF) + (s >> 16);
        }
        return s;
    }

    /// <summary>True when the IPv4 header and TCP checksums of a frame built here (no VLAN) verify.</summary>
    public static bool TcpChecksumValid(byte[] frame)
    {
        int ihl = (frame[14] & 0xF) * 4;
        int total = BinaryPrimitives.ReadUInt16BigEndian(frame.AsSpan(16));
        uint src = BinaryPrimitives.ReadUInt32BigEndian(frame.AsSpan(26));
        uint dst = BinaryPrimitives.ReadUInt32BigEndian(frame.AsSpan(30));
        var seg = frame.AsSpan(14 + ihl, total - ihl);
        return RefChecksum(seg, PseudoSum(src, dst, 6, seg.Length)) == 0
            && RefChecksum(frame.AsSpan(14, ihl)) == 0;
    }

    private static byte[] Ip(byte[] srcMac, byte[] dstMac, uint src, uint dst, byte proto, byte[] l4, ushort ipId, byte ttl, bool vlan = false)
    {
        int l3 = vlan ? 18 : 14;
        var f = new byte[l3 + 20 + l4.Length];
        dstMac.CopyTo(f, 0);
        srcMac.CopyTo(f, 6);
        if (vlan)
        {
            BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), 0x8100);
            BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(14), 42);
            BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(16), 0x0800);
        }
        else
        {
            BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), 0x0800);
        }
        var ip = f.AsSpan(l3, 20);
        ip[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(ip.Slice(2), (ushort)(20 + l4.Length));
        BinaryPrimitives.WriteUInt16BigEndian(ip.Slice(4), ipId);
        BinaryPrimitives.WriteUInt16BigEndian(ip.Slice(6), 0x4000);
        ip[8] = ttl;
        ip[9] = proto;
        BinaryPrimitives.WriteUInt32BigEndian(ip.Slice(12), src);
        BinaryPrimitives.WriteUInt32BigEndian(ip.Slice(16), dst);
        BinaryPrimitives.WriteUInt16BigEndian(ip.Slice(10), RefChecksum(ip));
        l4.CopyTo(f, l3 + 20);
        return f;
    }

    public static byte[] Tcp(uint src, ushort sport, uint dst, ushort dport, uint seq, uint ack, byte flags, ReadOnlySpan<byte> payload,
        byte[]? options = null, ushort ipId = 1, byte ttl = 64, ushort window = 65535, bool vlan = false)
    {
        byte[] t = TcpHeaderAndPayload(sport, dport, seq, ack, flags, payload, options, window);
        BinaryPrimitives.WriteUInt16BigEndian(t.AsSpan(16), RefChecksum(t, PseudoSum(src, dst, 6, t.Length)));
        bool fromGuest = src == GuestIp;
        return Ip(fromGuest ? GuestMac : ClientMac, fromGuest ? ClientMac : GuestMac, src, dst, 6, t, ipId, ttl, vlan);
    }

    /// <summary>A TCP header (options NOP-padded to 4 bytes) and payload, checksum field zero.</summary>
    private static byte[] TcpHeaderAndPayload(ushort sport, ushort dport, uint seq, uint ack, byte flags, ReadOnlySpan<byte> payload,
        byte[]? options, ushort window)
    {
        options ??= Array.Empty<byte>();
        int optLen = (options.Length + 3) & ~3;
        var t = new byte[20 + optLen + payload.Length];
        BinaryPrimitives.WriteUInt16BigEndian(t, sport);
        BinaryPrimitives.WriteUInt16BigEndian(t.AsSpan(2), dport);
        BinaryPrimitives.WriteUInt32BigEndian(t.AsSpan(4), seq);
        BinaryPrimitives.WriteUInt32BigEndian(t.AsSpan(8), ack);
        t[12] = (byte)(((20 + optLen) / 4) << 4);
        t[13] = flags;
        BinaryPrimitives.WriteUInt16BigEndian(t.AsSpan(14), window);
        options.CopyTo(t, 20);
        for (int i = 20 + options.Length; i < 20 + optLen; i++)
        {
            t[i] = 1; // NOP padding
        }
        payload.CopyTo(t.AsSpan(20 + optLen));
        return t;
    }

    /// <summary>Guest → client TCP segment (what both VMs output).</summary>
    public static byte[] Out(uint seq, uint ack, byte flags, ReadOnlySpan<byte> payload, ushort ipId = 1, byte ttl = 64, ushort port = ClientPort, byte[]? options = null) =>
        Tcp(GuestIp, GuestPort, ClientIp, port, seq, ack, flags, payload, options, ipId, ttl);

    /// <summary>Client → guest TCP segment.</summary>
    public static byte[] In(uint seq, uint ack, byte flags, ReadOnlySpan<byte> payload, byte[]? options = null) =>
        Tcp(ClientIp, ClientPort, GuestIp, GuestPort, seq, ack, flags, payload, options);

    public static byte[] Udp(uint src, ushort sport, uint dst, ushort dport, ReadOnlySpan<byte> payload, ushort ipId = 1)
    {
        var u = new byte[8 + payload.Length];
        BinaryPrimitives.WriteUInt16BigEndian(u, sport);
        BinaryPrimitives.WriteUInt16BigEndian(u.AsSpan(2), dport);
        BinaryPrimitives.WriteUInt16BigEndian(u.AsSpan(4), (ushort)u.Length);
        payload.CopyTo(u.AsSpan(8));
        return Ip(GuestMac, ClientMac, src, dst, 17, u, ipId, 64);
    }

    public static byte[] IcmpEchoReply(ushort id, ushort seq, ReadOnlySpan<byte> data, ushort ipId, byte ttl)
    {
        var m = new byte[8 + data.Length];
        m[0] = 0;
        BinaryPrimitives.WriteUInt16BigEndian(m.AsSpan(4), id);
        BinaryPrimitives.WriteUInt16BigEndian(m.AsSpan(6), seq);
        data.CopyTo(m.AsSpan(8));
        BinaryPrimitives.WriteUInt16BigEndian(m.AsSpan(2), RefChecksum(m));
        return Ip(GuestMac, ClientMac, GuestIp, ClientIp, 1, m, ipId, ttl);
    }

    public static byte[] ArpReply(uint senderIp, uint targetIp, bool padded = true)
    {
        var f = new byte[padded ? 60 : 42];
        ClientMac.CopyTo(f, 0);
        GuestMac.CopyTo(f, 6);
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), 0x0806);
        var a = f.AsSpan(14);
        BinaryPrimitives.WriteUInt16BigEndian(a, 1);
        BinaryPrimitives.WriteUInt16BigEndian(a.Slice(2), 0x0800);
        a[4] = 6;
        a[5] = 4;
        BinaryPrimitives.WriteUInt16BigEndian(a.Slice(6), 2);
        GuestMac.CopyTo(a.Slice(8));
        BinaryPrimitives.WriteUInt32BigEndian(a.Slice(14), senderIp);
        ClientMac.CopyTo(a.Slice(18));
        BinaryPrimitives.WriteUInt32BigEndian(a.Slice(24), targetIp);
        return f;
    }

    public static byte[] Bytes(string s) => System.Text.Encoding.ASCII.GetBytes(s);

    /// <summary>Inserts VLAN tags (outermost first) after the MAC addresses of an untagged frame.</summary>
    public static byte[] WithVlanTags(byte[] frame, params (ushort Tpid, ushort Tci)[] tags)
    {
        var f = new byte[frame.Length + 4 * tags.Length];
        frame.AsSpan(0, 12).CopyTo(f);
        for (int i = 0; i < tags.Length; i++)
        {
            BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12 + 4 * i), tags[i].Tpid);
            BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(14 + 4 * i), tags[i].Tci);
        }
        frame.AsSpan(12).CopyTo(f.AsSpan(12 + 4 * tags.Length));
        return f;
    }

    // ------------------------------------------------------------------ IPv6

    public static readonly UInt128 GuestIp6 = new(0x2001_0DB8_0000_0000, 2);  // 2001:db8::2
    public static readonly UInt128 ClientIp6 = new(0x2001_0DB8_0000_0000, 1); // 2001:db8::1

    public const byte HopByHop = 0, Routing = 43, Fragment = 44, Esp = 50, Ah = 51, NoNext = 59, DestOpts = 60;

    /// <summary>
    /// One IPv6 extension header to build: <paramref name="Length"/> bytes in all (multiple of 8; AH: of 4, at least 8;
    /// Fragment: 8). Next header and length bytes are filled in; options are Pad1 (zero) bytes.
    /// </summary>
    public readonly record struct Ext(byte Type, int Length = 8, ushort FragmentField = 0, uint FragmentId = 0);

    public static uint PseudoSum6(UInt128 src, UInt128 dst, byte nextHeader, int len)
    {
        uint s = nextHeader + (uint)(len >> 16) + (uint)(len & 0xFFFF);
        for (int i = 0; i < 8; i++)
        {
            s += (ushort)(src >> (112 - 16 * i));
            s += (ushort)(dst >> (112 - 16 * i));
        }
        while (s > 0xFFFF)
        {
            s = (s & 0xFFFF) + (s >> 16);
        }
        return s;
    }

    /// <summary>An untagged IPv6 frame: header, extension headers, upper-layer bytes (checksum already set by the caller).</summary>
    public static byte[] Ip6(UInt128 src, UInt128 dst, byte upper, ReadOnlySpan<byte> l4, Ext[]? ext = null, byte hopLimit = 64,
        uint flowLabel = 0, byte trafficClass = 0)
    {
        ext ??= Array.Empty<Ext>();
        int extLen = 0;
        foreach (Ext e in ext)
        {
            extLen += e.Length;
        }
        bool fromGuest = src != ClientIp6;
        var f = new byte[14 + 40 + extLen + l4.Length];
        (fromGuest ? ClientMac : GuestMac).CopyTo(f, 0);
        (fromGuest ? GuestMac : ClientMac).CopyTo(f, 6);
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), 0x86DD);
        var ip = f.AsSpan(14);
        BinaryPrimitives.WriteUInt32BigEndian(ip, 6u << 28 | (uint)trafficClass << 20 | (flowLabel & 0xFFFFF));
        BinaryPrimitives.WriteUInt16BigEndian(ip.Slice(4), (ushort)(extLen + l4.Length));
        ip[6] = ext.Length > 0 ? ext[0].Type : upper;
        ip[7] = hopLimit;
        BinaryPrimitives.WriteUInt128BigEndian(ip.Slice(8), src);
        BinaryPrimitives.WriteUInt128BigEndian(ip.Slice(24), dst);
        int off = 40;
        for (int i = 0; i < ext.Length; i++)
        {
            Ext e = ext[i];
            var h = ip.Slice(off, e.Length);
            h[0] = i + 1 < ext.Length ? ext[i + 1].Type : upper;
            if (e.Type == Fragment)
            {
                BinaryPrimitives.WriteUInt16BigEndian(h.Slice(2), e.FragmentField);
                BinaryPrimitives.WriteUInt32BigEndian(h.Slice(4), e.FragmentId);
            }
            else
            {
                h[1] = (byte)(e.Type == Ah ? e.Length / 4 - 2 : e.Length / 8 - 1);
            }
            off += e.Length;
        }
        l4.CopyTo(ip.Slice(off));
        return f;
    }

    public static byte[] Tcp6(UInt128 src, ushort sport, UInt128 dst, ushort dport, uint seq, uint ack, byte flags, ReadOnlySpan<byte> payload,
        byte[]? options = null, byte hopLimit = 64, uint flowLabel = 0, byte trafficClass = 0, Ext[]? ext = null, ushort window = 65535)
    {
        byte[] t = TcpHeaderAndPayload(sport, dport, seq, ack, flags, payload, options, window);
        BinaryPrimitives.WriteUInt16BigEndian(t.AsSpan(16), RefChecksum(t, PseudoSum6(src, dst, 6, t.Length)));
        return Ip6(src, dst, 6, t, ext, hopLimit, flowLabel, trafficClass);
    }

    /// <summary>Guest → client TCP segment over IPv6.</summary>
    public static byte[] Out6(uint seq, uint ack, byte flags, ReadOnlySpan<byte> payload, byte hopLimit = 64, uint flowLabel = 0,
        ushort port = ClientPort, byte[]? options = null, Ext[]? ext = null, byte trafficClass = 0) =>
        Tcp6(GuestIp6, GuestPort, ClientIp6, port, seq, ack, flags, payload, options, hopLimit, flowLabel, trafficClass, ext);

    public static byte[] Udp6(UInt128 src, ushort sport, UInt128 dst, ushort dport, ReadOnlySpan<byte> payload, byte hopLimit = 64,
        uint flowLabel = 0, Ext[]? ext = null)
    {
        var u = new byte[8 + payload.Length];
        BinaryPrimitives.WriteUInt16BigEndian(u, sport);
        BinaryPrimitives.WriteUInt16BigEndian(u.AsSpan(2), dport);
        BinaryPrimitives.WriteUInt16BigEndian(u.AsSpan(4), (ushort)u.Length);
        payload.CopyTo(u.AsSpan(8));
        BinaryPrimitives.WriteUInt16BigEndian(u.AsSpan(6), RefChecksum(u, PseudoSum6(src, dst, 17, u.Length)));
        return Ip6(src, dst, 17, u, ext, hopLimit, flowLabel);
    }

    /// <summary>An ICMPv6 message (checksum bytes 2–3 computed here) from the guest.</summary>
    public static byte[] Icmp6(ReadOnlySpan<byte> message, UInt128? dst = null, byte hopLimit = 64, uint flowLabel = 0, byte trafficClass = 0)
    {
        byte[] m = message.ToArray();
        UInt128 d = dst ?? ClientIp6;
        m[2] = 0;
        m[3] = 0;
        BinaryPrimitives.WriteUInt16BigEndian(m.AsSpan(2), RefChecksum(m, PseudoSum6(GuestIp6, d, 58, m.Length)));
        return Ip6(GuestIp6, d, 58, m, null, hopLimit, flowLabel, trafficClass);
    }

    public static byte[] Icmp6EchoReply(ushort id, ushort seq, ReadOnlySpan<byte> data, byte hopLimit = 64, uint flowLabel = 0, byte trafficClass = 0)
    {
        var m = new byte[8 + data.Length];
        m[0] = 129;
        BinaryPrimitives.WriteUInt16BigEndian(m.AsSpan(4), id);
        BinaryPrimitives.WriteUInt16BigEndian(m.AsSpan(6), seq);
        data.CopyTo(m.AsSpan(8));
        return Icmp6(m, null, hopLimit, flowLabel, trafficClass);
    }

    /// <summary>Neighbour advertisement (type 136) for <paramref name="target"/>, solicited + override, with a target link-layer address option.</summary>
    public static byte[] NeighbourAdvertisement(UInt128 target, byte[]? linkLayer = null, byte hopLimit = 255, uint flowLabel = 0)
    {
        var m = new byte[32];
        m[0] = 136;
        m[4] = 0x60; // S, O
        BinaryPrimitives.WriteUInt128BigEndian(m.AsSpan(8), target);
        m[24] = 2; // target link-layer address
        m[25] = 1; // 8 bytes
        (linkLayer ?? GuestMac).CopyTo(m, 26);
        return Icmp6(m, ClientIp6, hopLimit, flowLabel);
    }
}

internal sealed class FakeTime : TimeProvider
{
    private long _ticks = 1_000_000;
    public override long TimestampFrequency => 1_000_000_000;
    public override long GetTimestamp() => _ticks;
    public void Advance(TimeSpan t) => _ticks += (long)(t.TotalSeconds * TimestampFrequency);
}

internal sealed class RecordingSink : ICompareSink
{
    public List<byte[]> Released { get; } = new();
    public List<CheckpointReason> Requests { get; } = new();
    public bool Record { get; set; } = true;
    public long Count;

    public void Release(ReadOnlySpan<byte> frame)
    {
        Count++;
        if (Record)
        {
            Released.Add(frame.ToArray());
        }
    }

    public void RequestCheckpoint(CheckpointReason reason) => Requests.Add(reason);
}

internal sealed class Harness
{
    public FakeTime Time { get; } = new();
    public RecordingSink Sink { get; } = new();
    public CompareEngine Engine { get; }

    public Harness(CompareOptions? options = null)
    {
        Engine = new CompareEngine(options ?? new CompareOptions(), Sink, Time);
    }

    public void Pvm(byte[] f) => Engine.OnPvmFrame(f);
    public void Svm(byte[] f) => Engine.OnSvmFrame(f);
}
