using System.Buffers.Binary;
using System.Runtime.CompilerServices;

namespace Colo.Proxy;

/// <summary>
/// An allocation-free, bounds-checked view of one Ethernet frame: Ethernet (with at most one 802.1Q tag),
/// then ARP or IPv4 (TCP, UDP, ICMP; fragments and other protocols are <see cref="PacketKind.OtherIPv4"/>).
/// All offsets are byte offsets from the start of <see cref="Frame"/>; IP addresses, ports, sequence and
/// acknowledgement numbers are in host order (decoded from network byte order).
/// </summary>
public readonly ref struct PacketView
{
    /// <summary>Ethernet header length without a VLAN tag, in bytes.</summary>
    public const int EthernetHeaderLength = 14;
    /// <summary>Ethertype of IPv4.</summary>
    public const ushort EtherTypeIPv4 = 0x0800;
    /// <summary>Ethertype of ARP.</summary>
    public const ushort EtherTypeArp = 0x0806;
    /// <summary>Ethertype of an 802.1Q VLAN tag.</summary>
    public const ushort EtherTypeVlan = 0x8100;
    /// <summary>IP protocol number of ICMP.</summary>
    public const byte ProtocolIcmp = 1;
    /// <summary>IP protocol number of TCP.</summary>
    public const byte ProtocolTcp = 6;
    /// <summary>IP protocol number of UDP.</summary>
    public const byte ProtocolUdp = 17;

    /// <summary>The whole frame this view was parsed from (including any Ethernet padding).</summary>
    public ReadOnlySpan<byte> Frame { get; init; }
    /// <summary>What the frame was recognised as.</summary>
    public PacketKind Kind { get; init; }
    /// <summary>The ethertype after any VLAN tag.</summary>
    public ushort EtherType { get; init; }
    /// <summary>True when one 802.1Q tag was present.</summary>
    public bool HasVlan { get; init; }
    /// <summary>The 802.1Q tag control information (PCP/DEI/VID) when <see cref="HasVlan"/>, else 0.</summary>
    public ushort VlanTci { get; init; }
    /// <summary>Offset of the network-layer header (ARP or IPv4).</summary>
    public int L3Offset { get; init; }
    /// <summary>IPv4 header length in bytes (IHL*4); 0 when not IPv4.</summary>
    public int IpHeaderLength { get; init; }
    /// <summary>IPv4 total length in bytes (header + payload); 0 when not IPv4. Bytes after it are padding.</summary>
    public int IpTotalLength { get; init; }
    /// <summary>IPv4 protocol number; 0 when not IPv4.</summary>
    public byte Protocol { get; init; }
    /// <summary>IPv4 source address (host order); 0 when not IPv4.</summary>
    public uint SrcIp { get; init; }
    /// <summary>IPv4 destination address (host order); 0 when not IPv4.</summary>
    public uint DstIp { get; init; }
    /// <summary>IPv4 flags and fragment offset field (host order).</summary>
    public ushort FragmentField { get; init; }
    /// <summary>Offset of the transport header (TCP, UDP, ICMP) or IP payload; 0 when not IPv4.</summary>
    public int L4Offset { get; init; }
    /// <summary>TCP/UDP source port; 0 otherwise.</summary>
    public ushort SrcPort { get; init; }
    /// <summary>TCP/UDP destination port; 0 otherwise.</summary>
    public ushort DstPort { get; init; }
    /// <summary>TCP sequence number.</summary>
    public uint Seq { get; init; }
    /// <summary>TCP acknowledgement number (meaningful only with <see cref="TcpFlags.Ack"/>).</summary>
    public uint AckNumber { get; init; }
    /// <summary>TCP flags.</summary>
    public TcpFlags Flags { get; init; }
    /// <summary>TCP header length in bytes (data offset*4); 0 when not TCP.</summary>
    public int TcpHeaderLength { get; init; }
    /// <summary>Offset of the first SACK block (after the kind/length bytes), 0 when no SACK option.</summary>
    public int SackOffset { get; init; }
    /// <summary>Number of 8-byte SACK blocks at <see cref="SackOffset"/>.</summary>
    public int SackBlockCount { get; init; }
    /// <summary>Offset of the TCP timestamps option (its kind byte), 0 when absent.</summary>
    public int TimestampOptionOffset { get; init; }
    /// <summary>
    /// Offset of the compared payload: TCP/UDP payload, the whole ICMP message, the ARP packet, or the IPv4 payload
    /// for <see cref="PacketKind.OtherIPv4"/>. 0 for <see cref="PacketKind.Other"/>.
    /// </summary>
    public int PayloadOffset { get; init; }
    /// <summary>Length in bytes of the region at <see cref="PayloadOffset"/>.</summary>
    public int PayloadLength { get; init; }

    /// <summary>The region described by <see cref="PayloadOffset"/>/<see cref="PayloadLength"/>.</summary>
    public ReadOnlySpan<byte> Payload => Frame.Slice(PayloadOffset, PayloadLength);

    /// <summary>The IPv4 packet (header + payload, without Ethernet padding); empty when not IPv4.</summary>
    public ReadOnlySpan<byte> IpPacket => IpTotalLength == 0 ? default : Frame.Slice(L3Offset, IpTotalLength);

    /// <summary>The TCP segment (header + payload); empty when not TCP.</summary>
    public ReadOnlySpan<byte> TcpSegment => Kind == PacketKind.Tcp ? Frame.Slice(L4Offset, L3Offset + IpTotalLength - L4Offset) : default;

    /// <summary>True when the flag is set (TCP only).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Has(TcpFlags flag) => (Flags & flag) != 0;

    /// <summary>
    /// Sequence space occupied by a TCP segment: payload length plus one for SYN and one for FIN.
    /// </summary>
    public int SequenceLength => PayloadLength + ((Flags & TcpFlags.Syn) != 0 ? 1 : 0) + ((Flags & TcpFlags.Fin) != 0 ? 1 : 0);

    /// <summary>
    /// Parses <paramref name="frame"/>. Never throws and never reads outside the span.
    /// </summary>
    /// <param name="frame">A complete Ethernet frame (destination MAC first, no FCS required).</param>
    /// <param name="view">The parsed view; on failure it still carries <see cref="Frame"/>.</param>
    /// <param name="kind"><see cref="BadFrameKind.None"/> on success, else why the frame is malformed.</param>
    /// <returns>True when the frame is well formed (unknown ethertypes are well formed, kind <see cref="PacketKind.Other"/>).</returns>
    public static bool TryParse(ReadOnlySpan<byte> frame, out PacketView view, out BadFrameKind kind)
    {
        view = new PacketView { Frame = frame };
        if (frame.Length < EthernetHeaderLength)
        {
            kind = BadFrameKind.TruncatedEthernet;
            return false;
        }
        int l3 = 12;
        ushort etherType = BinaryPrimitives.ReadUInt16BigEndian(frame.Slice(12, 2));
        bool hasVlan = false;
        ushort tci = 0;
        if (etherType == EtherTypeVlan)
        {
            if (frame.Length < EthernetHeaderLength + 4)
            {
                kind = BadFrameKind.TruncatedEthernet;
                return false;
            }
            hasVlan = true;
            tci = BinaryPrimitives.ReadUInt16BigEndian(frame.Slice(14, 2));
            etherType = BinaryPrimitives.ReadUInt16BigEndian(frame.Slice(16, 2));
            l3 = 18;
        }
        else
        {
            l3 = 14;
        }

        if (etherType == EtherTypeArp)
        {
            return ParseArp(frame, l3, etherType, hasVlan, tci, out view, out kind);
        }
        if (etherType != EtherTypeIPv4)
        {
            view = new PacketView { Frame = frame, Kind = PacketKind.Other, EtherType = etherType, HasVlan = hasVlan, VlanTci = tci, L3Offset = l3 };
            kind = BadFrameKind.None;
            return true;
        }
        return ParseIPv4(frame, l3, hasVlan, tci, out view, out kind);
    }

    private static bool ParseArp(ReadOnlySpan<byte> frame, int l3, ushort etherType, bool hasVlan, ushort tci, out PacketView view, out BadFrameKind kind)
    {
        view = new PacketView { Frame = frame };
        int avail = frame.Length - l3;
        if (avail < 8)
        {
            kind = BadFrameKind.TruncatedArp;
            return false;
        }
        int hlen = frame[l3 + 4];
        int plen = frame[l3 + 5];
        int len = 8 + 2 * (hlen + plen);
        if (len > avail)
        {
            kind = BadFrameKind.TruncatedArp;
            return false;
        }
        view = new PacketView
        {
            Frame = frame,
            Kind = PacketKind.Arp,
            EtherType = etherType,
            HasVlan = hasVlan,
            VlanTci = tci,
            L3Offset = l3,
            PayloadOffset = l3,
            PayloadLength = len,
        };
        kind = BadFrameKind.None;
        return true;
    }

    private static bool ParseIPv4(ReadOnlySpan<byte> frame, int l3, bool hasVlan, ushort tci, out PacketView view, out BadFrameKind kind)
    {
        view = new PacketView { Frame = frame };
        int avail = frame.Length - l3;
        if (avail < 20)
        {
            kind = BadFrameKind.TruncatedIp;
            return false;
        }
        ReadOnlySpan<byte> ip = frame.Slice(l3);
        if ((ip[0] >> 4) != 4)
        {
            kind = BadFrameKind.IpVersion;
            return false;
        }
        int ihl = (ip[0] & 0x0F) * 4;
        if (ihl < 20 || ihl > avail)
        {
            kind = BadFrameKind.IpHeaderLength;
            return false;
        }
        int total = BinaryPrimitives.ReadUInt16BigEndian(ip.Slice(2, 2));
        if (total < ihl || total > avail)
        {
            kind = BadFrameKind.IpTotalLength;
            return false;
        }
        ushort frag = BinaryPrimitives.ReadUInt16BigEndian(ip.Slice(6, 2));
        byte proto = ip[9];
        uint src = BinaryPrimitives.ReadUInt32BigEndian(ip.Slice(12, 4));
        uint dst = BinaryPrimitives.ReadUInt32BigEndian(ip.Slice(16, 4));
        int l4 = l3 + ihl;
        int l4Len = total - ihl;
        ReadOnlySpan<byte> seg = frame.Slice(l4, l4Len);

        // Fragments (MF set or a non-zero offset) are never parsed past the IP header.
        if ((frag & 0x3FFF) != 0 || (proto != ProtocolTcp && proto != ProtocolUdp && proto != ProtocolIcmp))
        {
            view = new PacketView
            {
                Frame = frame,
                Kind = PacketKind.OtherIPv4,
                EtherType = EtherTypeIPv4,
                HasVlan = hasVlan,
                VlanTci = tci,
                L3Offset = l3,
                IpHeaderLength = ihl,
                IpTotalLength = total,
                Protocol = proto,
                SrcIp = src,
                DstIp = dst,
                FragmentField = frag,
                L4Offset = l4,
                PayloadOffset = l4,
                PayloadLength = l4Len,
            };
            kind = BadFrameKind.None;
            return true;
        }

        if (proto == ProtocolTcp)
        {
            if (l4Len < 20)
            {
                kind = BadFrameKind.TruncatedTcp;
                return false;
            }
            int doff = (seg[12] >> 4) * 4;
            if (doff < 20 || doff > l4Len)
            {
                kind = BadFrameKind.TcpDataOffset;
                return false;
            }
            int sackOff = 0, sackCount = 0, tsOff = 0;
            int i = 20;
            while (i < doff)
            {
                byte optKind = seg[i];
                if (optKind == 0)
                {
                    break;
                }
                if (optKind == 1)
                {
                    i++;
                    continue;
                }
                if (i + 1 >= doff)
                {
                    kind = BadFrameKind.TcpOptions;
                    return false;
                }
                int optLen = seg[i + 1];
                if (optLen < 2 || i + optLen > doff)
                {
                    kind = BadFrameKind.TcpOptions;
                    return false;
                }
                if (optKind == 5)
                {
                    if (optLen < 10 || ((optLen - 2) & 7) != 0)
                    {
                        kind = BadFrameKind.TcpOptions;
                        return false;
                    }
                    sackOff = l4 + i + 2;
                    sackCount = (optLen - 2) / 8;
                }
                else if (optKind == 8 && optLen == 10)
                {
                    tsOff = l4 + i;
                }
                i += optLen;
            }
            view = new PacketView
            {
                Frame = frame,
                Kind = PacketKind.Tcp,
                EtherType = EtherTypeIPv4,
                HasVlan = hasVlan,
                VlanTci = tci,
                L3Offset = l3,
                IpHeaderLength = ihl,
                IpTotalLength = total,
                Protocol = proto,
                SrcIp = src,
                DstIp = dst,
                FragmentField = frag,
                L4Offset = l4,
                SrcPort = BinaryPrimitives.ReadUInt16BigEndian(seg),
                DstPort = BinaryPrimitives.ReadUInt16BigEndian(seg.Slice(2, 2)),
                Seq = BinaryPrimitives.ReadUInt32BigEndian(seg.Slice(4, 4)),
                AckNumber = BinaryPrimitives.ReadUInt32BigEndian(seg.Slice(8, 4)),
                Flags = (TcpFlags)seg[13],
                TcpHeaderLength = doff,
                SackOffset = sackOff,
                SackBlockCount = sackCount,
                TimestampOptionOffset = tsOff,
                PayloadOffset = l4 + doff,
                PayloadLength = l4Len - doff,
            };
            kind = BadFrameKind.None;
            return true;
        }

        if (proto == ProtocolUdp)
        {
            if (l4Len < 8)
            {
                kind = BadFrameKind.TruncatedUdp;
                return false;
            }
            int udpLen = BinaryPrimitives.ReadUInt16BigEndian(seg.Slice(4, 2));
            if (udpLen < 8 || udpLen > l4Len)
            {
                kind = BadFrameKind.TruncatedUdp;
                return false;
            }
            view = new PacketView
            {
                Frame = frame,
                Kind = PacketKind.Udp,
                EtherType = EtherTypeIPv4,
                HasVlan = hasVlan,
                VlanTci = tci,
                L3Offset = l3,
                IpHeaderLength = ihl,
                IpTotalLength = total,
                Protocol = proto,
                SrcIp = src,
                DstIp = dst,
                FragmentField = frag,
                L4Offset = l4,
                SrcPort = BinaryPrimitives.ReadUInt16BigEndian(seg),
                DstPort = BinaryPrimitives.ReadUInt16BigEndian(seg.Slice(2, 2)),
                PayloadOffset = l4 + 8,
                PayloadLength = udpLen - 8,
            };
            kind = BadFrameKind.None;
            return true;
        }

        // ICMP
        if (l4Len < 8)
        {
            kind = BadFrameKind.TruncatedIcmp;
            return false;
        }
        view = new PacketView
        {
            Frame = frame,
            Kind = PacketKind.Icmp,
            EtherType = EtherTypeIPv4,
            HasVlan = hasVlan,
            VlanTci = tci,
            L3Offset = l3,
            IpHeaderLength = ihl,
            IpTotalLength = total,
            Protocol = proto,
            SrcIp = src,
            DstIp = dst,
            FragmentField = frag,
            L4Offset = l4,
            PayloadOffset = l4,
            PayloadLength = l4Len,
        };
        kind = BadFrameKind.None;
        return true;
    }
}
