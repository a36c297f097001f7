using System.Buffers.Binary;
using System.Net;
using System.Net.NetworkInformation;

namespace Colo.Node;

/// <summary>
/// Builds the gratuitous ARP request (RFC 5227 §3 "ARP Announcement") that a failed-over secondary
/// sends so the client LAN's switches learn the guest's MAC on the new port.
/// </summary>
public static class GratuitousArp
{
    /// <summary>Frame length in bytes (Ethernet header 14 + ARP 28, padded to the 60-byte minimum).</summary>
    public const int FrameLength = 60;

    /// <summary>Writes the announcement for <paramref name="mac"/>/<paramref name="ip"/> into <paramref name="frame"/> (60 bytes).</summary>
    public static void Build(Span<byte> frame, PhysicalAddress mac, IPAddress ip)
    {
        frame[..FrameLength].Clear();
        Span<byte> m = stackalloc byte[6];
        mac.GetAddressBytes().CopyTo(m);
        Span<byte> a = stackalloc byte[4];
        ip.TryWriteBytes(a, out _);
        frame[..6].Fill(0xFF);
        m.CopyTo(frame[6..]);
        BinaryPrimitives.WriteUInt16BigEndian(frame[12..], 0x0806);
        var arp = frame[14..];
        BinaryPrimitives.WriteUInt16BigEndian(arp, 1);          // Ethernet
        BinaryPrimitives.WriteUInt16BigEndian(arp[2..], 0x0800); // IPv4
        arp[4] = 6;
        arp[5] = 4;
        BinaryPrimitives.WriteUInt16BigEndian(arp[6..], 1);     // request
        m.CopyTo(arp[8..]);
        a.CopyTo(arp[14..]);
        a.CopyTo(arp[24..]);
    }
}
