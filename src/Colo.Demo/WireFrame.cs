using System.Buffers.Binary;

namespace Colo.Demo;

/// <summary>What <see cref="WireFrame.TryParse"/> recognised.</summary>
public enum WireFrameKind
{
    /// <summary>Anything else (IPv6, UDP, other ICMP types, IP fragments, other EtherTypes).</summary>
    Other,

    /// <summary>An Ethernet/IPv4 ARP packet.</summary>
    Arp,

    /// <summary>An IPv4 TCP segment (first fragment only, i.e. unfragmented).</summary>
    Tcp,

    /// <summary>An IPv4 ICMP echo request (type 8) or reply (type 0).</summary>
    IcmpEcho,
}

/// <summary>
/// The fields of one captured Ethernet frame that the demo's wire probe needs. Parsing is independent of the proxy's
/// own <c>PacketView</c> on purpose: the probe checks the proxy's output and must not share its bugs. Every read is
/// bounds-checked against the captured bytes; a frame shorter than its headers is rejected. One 802.1Q/802.1ad tag is
/// skipped. MAC addresses are the 48 bits in the low bits of a <see cref="ulong"/>, IPv4 addresses the 32 bits of a
/// <see cref="uint"/>, both in network (big-endian) order.
/// </summary>
public readonly record struct WireFrame
{
    /// <summary>Ethernet header length.</summary>
    public const int EthernetHeaderLength = 14;

    /// <summary>The frame's kind.</summary>
    public WireFrameKind Kind { get; init; }

    /// <summary>Ethernet destination MAC.</summary>
    public ulong DstMac { get; init; }

    /// <summary>Ethernet source MAC.</summary>
    public ulong SrcMac { get; init; }

    /// <summary>ARP operation (1 request, 2 reply).</summary>
    public ushort ArpOp { get; init; }

    /// <summary>ARP sender hardware address.</summary>
    public ulong ArpSenderMac { get; init; }

    /// <summary>ARP sender protocol address.</summary>
    public uint ArpSenderIp { get; init; }

    /// <summary>ARP target hardware address.</summary>
    public ulong ArpTargetMac { get; init; }

    /// <summary>ARP target protocol address.</summary>
    public uint ArpTargetIp { get; init; }

    /// <summary>IPv4 source address (TCP and ICMP).</summary>
    public uint SrcIp { get; init; }

    /// <summary>IPv4 destination address (TCP and ICMP).</summary>
    public uint DstIp { get; init; }

    /// <summary>TCP source port.</summary>
    public ushort SrcPort { get; init; }

    /// <summary>TCP destination port.</summary>
    public ushort DstPort { get; init; }

    /// <summary>TCP sequence number.</summary>
    public uint Seq { get; init; }

    /// <summary>TCP acknowledgment number.</summary>
    public uint Ack { get; init; }

    /// <summary>TCP flags (FIN, SYN, RST, PSH, ACK).</summary>
    public TcpSegmentFlags Flags { get; init; }

    /// <summary>TCP payload length from the IPv4 total length (the captured bytes may be fewer).</summary>
    public int PayloadLength { get; init; }

    /// <summary>ICMP type (0 echo reply, 8 echo request).</summary>
    public byte IcmpType { get; init; }

    /// <summary>ICMP echo identifier.</summary>
    public ushort IcmpId { get; init; }

    /// <summary>ICMP echo sequence number.</summary>
    public ushort IcmpSeq { get; init; }

    /// <summary>Offset of the ICMP echo data in the frame.</summary>
    public int IcmpDataOffset { get; init; }

    /// <summary>Length of the ICMP echo data per the IPv4 total length.</summary>
    public int IcmpDataLength { get; init; }

    /// <summary>Parses <paramref name="frame"/>.</summary>
    /// <param name="frame">The captured bytes (possibly truncated after the headers).</param>
    /// <param name="result">The parsed fields; <see cref="WireFrameKind.Other"/> for a well-formed frame of no interest.</param>
    /// <returns>False when the frame is malformed (too short for its Ethernet, ARP, IPv4, TCP or ICMP header, or inconsistent lengths).</returns>
    public static bool TryParse(ReadOnlySpan<byte> frame, out WireFrame result)
    {
        result = default;
        if (frame.Length < EthernetHeaderLength)
            return false;
        ulong dst = ReadMac(frame), src = ReadMac(frame[6..]);
        int offset = 12;
        ushort type = BinaryPrimitives.ReadUInt16BigEndian(frame[offset..]);
        if (type is 0x8100 or 0x88A8)
        {
            if (frame.Length < offset + 6)
                return false;
            offset += 4;
            type = BinaryPrimitives.ReadUInt16BigEndian(frame[offset..]);
        }
        offset += 2;
        var l3 = frame[offset..];
        result = new WireFrame { DstMac = dst, SrcMac = src };
        if (type == 0x0806)
            return TryParseArp(l3, ref result);
        if (type == 0x0800)
            return TryParseIpv4(l3, offset, ref result);
        return true;
    }

    private static bool TryParseArp(ReadOnlySpan<byte> arp, ref WireFrame result)
    {
        if (arp.Length < 8)
            return false;
        ushort htype = BinaryPrimitives.ReadUInt16BigEndian(arp), ptype = BinaryPrimitives.ReadUInt16BigEndian(arp[2..]);
        if (htype != 1 || ptype != 0x0800 || arp[4] != 6 || arp[5] != 4)
            return true; // well-formed, not Ethernet/IPv4 ARP
        if (arp.Length < 28)
            return false;
        result = result with
        {
            Kind = WireFrameKind.Arp,
            ArpOp = BinaryPrimitives.ReadUInt16BigEndian(arp[6..]),
            ArpSenderMac = ReadMac(arp[8..]),
            ArpSenderIp = BinaryPrimitives.ReadUInt32BigEndian(arp[14..]),
            ArpTargetMac = ReadMac(arp[18..]),
            ArpTargetIp = BinaryPrimitives.ReadUInt32BigEndian(arp[24..]),
        };
        return true;
    }

    private static bool TryParseIpv4(ReadOnlySpan<byte> ip, int ipOffset, ref WireFrame result)
    {
        if (ip.Length < 20 || ip[0] >> 4 != 4)
            return false;
        int ihl = (ip[0] & 0x0F) * 4;
        int total = BinaryPrimitives.ReadUInt16BigEndian(ip[2..]);
        if (ihl < 20 || ip.Length < ihl || total < ihl)
            return false;
        ushort fragment = BinaryPrimitives.ReadUInt16BigEndian(ip[6..]);
        bool fragmented = (fragment & 0x3FFF) != 0; // MF set or offset non-zero
        byte protocol = ip[9];
        uint srcIp = BinaryPrimitives.ReadUInt32BigEndian(ip[12..]), dstIp = BinaryPrimitives.ReadUInt32BigEndian(ip[16..]);
        if (fragmented)
            return true;
        var l4 = ip[ihl..];
        int l4Total = total - ihl;
        if (protocol == 6)
        {
            if (l4.Length < 20 || l4Total < 20)
                return false;
            int dataOffset = (l4[12] >> 4) * 4;
            if (dataOffset < 20 || dataOffset > l4Total || l4.Length < dataOffset)
                return false;
            result = result with
            {
                Kind = WireFrameKind.Tcp,
                SrcIp = srcIp,
                DstIp = dstIp,
                SrcPort = BinaryPrimitives.ReadUInt16BigEndian(l4),
                DstPort = BinaryPrimitives.ReadUInt16BigEndian(l4[2..]),
                Seq = BinaryPrimitives.ReadUInt32BigEndian(l4[4..]),
                Ack = BinaryPrimitives.ReadUInt32BigEndian(l4[8..]),
                Flags = (TcpSegmentFlags)(l4[13] & 0x1F),
                PayloadLength = l4Total - dataOffset,
            };
            return true;
        }
        if (protocol == 1)
        {
            if (l4.Length < 8 || l4Total < 8)
                return false;
            byte icmpType = l4[0];
            if (icmpType is not (0 or 8))
                return true;
            result = result with
            {
                Kind = WireFrameKind.IcmpEcho,
                SrcIp = srcIp,
                DstIp = dstIp,
                IcmpType = icmpType,
                IcmpId = BinaryPrimitives.ReadUInt16BigEndian(l4[4..]),
                IcmpSeq = BinaryPrimitives.ReadUInt16BigEndian(l4[6..]),
                IcmpDataOffset = ipOffset + ihl + 8,
                IcmpDataLength = l4Total - 8,
            };
            return true;
        }
        return true;
    }

    /// <summary>Reads a 6-byte MAC address into the low 48 bits.</summary>
    /// <param name="bytes">At least 6 bytes.</param>
    /// <returns>The address.</returns>
    public static ulong ReadMac(ReadOnlySpan<byte> bytes) =>
        ((ulong)BinaryPrimitives.ReadUInt16BigEndian(bytes) << 32) | BinaryPrimitives.ReadUInt32BigEndian(bytes[2..]);

    /// <summary>Writes the low 48 bits of <paramref name="mac"/> as 6 bytes.</summary>
    /// <param name="bytes">At least 6 bytes.</param>
    /// <param name="mac">The address.</param>
    public static void WriteMac(Span<byte> bytes, ulong mac)
    {
        BinaryPrimitives.WriteUInt16BigEndian(bytes, (ushort)(mac >> 32));
        BinaryPrimitives.WriteUInt32BigEndian(bytes[2..], (uint)mac);
    }

    /// <summary>Parses <c>52:54:00:c0:10:01</c> (or with <c>-</c>) into the low 48 bits.</summary>
    /// <param name="text">Six hex bytes separated by <c>:</c> or <c>-</c>.</param>
    /// <returns>The address.</returns>
    /// <exception cref="FormatException">Not a MAC address.</exception>
    public static ulong ParseMac(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        string[] parts = text.Split(':', '-');
        if (parts.Length != 6)
            throw new FormatException($"'{text}' is not a MAC address");
        ulong mac = 0;
        foreach (string p in parts)
        {
            if (p.Length != 2 || !byte.TryParse(p, System.Globalization.NumberStyles.HexNumber, System.Globalization.CultureInfo.InvariantCulture, out byte b))
                throw new FormatException($"'{text}' is not a MAC address");
            mac = (mac << 8) | b;
        }
        return mac;
    }

    /// <summary>Formats the low 48 bits as <c>52:54:00:c0:10:01</c>.</summary>
    /// <param name="mac">The address.</param>
    /// <returns>Lowercase colon-separated hex.</returns>
    public static string FormatMac(ulong mac) =>
        string.Join(':', Enumerable.Range(0, 6).Select(i => ((byte)(mac >> (40 - 8 * i))).ToString("x2", System.Globalization.CultureInfo.InvariantCulture)));
}
