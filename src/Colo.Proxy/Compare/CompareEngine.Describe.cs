using System.Buffers.Binary;
using System.Net;

namespace Colo.Proxy;

// Log text for LastCause: built only on the rare mismatch / timeout / queue-full paths, never per packet.
public sealed partial class CompareEngine
{
    /// <summary>
    /// Why the engine last requested a checkpoint (mismatch, timeout, queue full), in words, e.g.
    /// "tcp mismatch on 10.0.0.2:80-10.0.0.9:4711 (...)" or "... on [2001:db8::2]:80-[2001:db8::1]:4711 (...)".
    /// For logs; set only on that rare path.
    /// </summary>
    public string? LastCause { get; private set; }

    private static string Ip(uint a) => $"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}";

    /// <summary>RFC 5952 text of an IPv6 address (host-order 128 bits).</summary>
    private static string Ip6(UInt128 a)
    {
        Span<byte> b = stackalloc byte[16];
        BinaryPrimitives.WriteUInt128BigEndian(b, a);
        return new IPAddress(b).ToString();
    }

    /// <summary>An address (128-bit key form) with its port: a.b.c.d:port for IPv4, [v6]:port for IPv6.</summary>
    private static string Endpoint(UInt128 a, ushort port, bool ipv6) => ipv6 ? $"[{Ip6(a)}]:{port}" : $"{Ip((uint)a)}:{port}";

    private static string Describe(ConnKey k) => $"{Endpoint(k.GuestIp, k.GuestPort, k.IPv6)}-{Endpoint(k.PeerIp, k.PeerPort, k.IPv6)}";

    private static string Describe(FlowKey k)
    {
        bool v6 = (PacketKind)k.Kind is PacketKind.Udp6 or PacketKind.Icmp6 or PacketKind.OtherIPv6;
        return $"{(PacketKind)k.Kind} flow proto {k.Protocol} ethertype 0x{k.EtherType:x4} {Endpoint(k.Src, k.SrcPort, v6)}->{Endpoint(k.Dst, k.DstPort, v6)}";
    }

    private string DescribeTimeout(long oldest)
    {
        static string Owner(object? o) => o switch
        {
            TcpConnection c => "tcp " + Describe(c.Key),
            OtherFlow f => Describe(f.Key),
            _ => "unknown",
        };
        if (_pvmHeld.Head is { } p && p.Arrival == oldest)
            return "timeout: PVM output unmatched on " + Owner(p.Owner);
        if (_svmHeld.Head is { } s && s.Arrival == oldest)
            return "timeout: SVM-only output on " + Owner(s.Owner);
        if (_pendHead is { } c)
            return "timeout: waiting for the SVM's ACK on tcp " + Describe(c.Key);
        return "timeout";
    }
}
