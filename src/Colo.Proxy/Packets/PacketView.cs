using System.Buffers.Binary;
using System.Runtime.CompilerServices;

namespace Colo.Proxy;

/// <summary>
/// An allocation-free, bounds-checked view of one Ethernet frame: Ethernet (with up to <see cref="MaxVlanTags"/>
/// stacked 802.1Q / 802.1ad tags), then ARP, IPv4 (TCP, UDP, ICMP; fragments and other protocols are
/// <see cref="PacketKind.OtherIPv4"/>) or IPv6 (extension headers walked to TCP, UDP, ICMPv6; fragments and other
/// next headers are <see cref="PacketKind.OtherIPv6"/>).
/// All offsets are byte offsets from the start of <see cref="Frame"/>; IP addresses, ports, sequence and
/// acknowledgement numbers are in host order (decoded from network byte order).
/// </summary>
public ref struct PacketView
{
    /// <summary>Ethernet header length without a VLAN tag, in bytes.</summary>
    public const int EthernetHeaderLength = 14;
    /// <summary>IPv6 fixed header length, in bytes.</summary>
    public const int Ipv6HeaderLength = 40;
    /// <summary>Most stacked VLAN tags parsed; a frame with more is <see cref="BadFrameKind.TooManyVlanTags"/>.</summary>
    public const int MaxVlanTags = 4;
    /// <summary>Most IPv6 extension headers walked; a packet with more is <see cref="BadFrameKind.TooManyExtensionHeaders"/>.</summary>
    public const int MaxExtensionHeaders = 8;
    /// <summary>Ethertype of IPv4.</summary>
    public const ushort EtherTypeIPv4 = 0x0800;
    /// <summary>Ethertype of ARP.</summary>
    public const ushort EtherTypeArp = 0x0806;
    /// <summary>Ethertype of IPv6.</summary>
    public const ushort EtherTypeIPv6 = 0x86DD;
    /// <summary>Ethertype (TPID) of an 802.1Q VLAN tag.</summary>
    public const ushort EtherTypeVlan = 0x8100;
    /// <summary>Ethertype (TPID) of an 802.1ad service tag (QinQ outer tag).</summary>
    public const ushort EtherTypeQinQ = 0x88A8;
    /// <summary>IP protocol number of ICMP.</summary>
    public const byte ProtocolIcmp = 1;
    /// <summary>IP protocol number of TCP.</summary>
    public const byte ProtocolTcp = 6;
    /// <summary>IP protocol number of UDP.</summary>
    public const byte ProtocolUdp = 17;
    /// <summary>IPv6 next header of ICMPv6.</summary>
    public const byte ProtocolIcmpv6 = 58;
    /// <summary>IPv6 next header of the hop-by-hop options header.</summary>
    public const byte NextHeaderHopByHop = 0;
    /// <summary>IPv6 next header of the routing header.</summary>
    public const byte NextHeaderRouting = 43;
    /// <summary>IPv6 next header of the fragment header.</summary>
    public const byte NextHeaderFragment = 44;
    /// <summary>IPv6 next header of the authentication header (AH).</summary>
    public const byte NextHeaderAuthentication = 51;
    /// <summary>IPv6 next header of the destination options header.</summary>
    public const byte NextHeaderDestinationOptions = 60;

    /// <summary>The whole frame this view was parsed from (including any Ethernet padding).</summary>
    public ReadOnlySpan<byte> Frame { get; private set; }
    /// <summary>What the frame was recognised as.</summary>
    public PacketKind Kind { get; private set; }
    /// <summary>The ethertype after any VLAN tags.</summary>
    public ushort EtherType { get; private set; }
    /// <summary>Number of VLAN tags (0x8100 or 0x88A8) before <see cref="EtherType"/>, 0 to <see cref="MaxVlanTags"/>.</summary>
    public int VlanCount { get; private set; }
    /// <summary>True when at least one VLAN tag was present.</summary>
    public readonly bool HasVlan => VlanCount > 0;
    /// <summary>The outermost tag's control information (PCP/DEI/VID) when <see cref="HasVlan"/>, else 0.</summary>
    public ushort VlanTci { get; private set; }
    /// <summary>Offset of the network-layer header (ARP, IPv4 or IPv6).</summary>
    public int L3Offset { get; private set; }
    /// <summary>True for the IPv6 kinds (<see cref="PacketKind.Tcp6"/>, <see cref="PacketKind.Udp6"/>, <see cref="PacketKind.Icmp6"/>, <see cref="PacketKind.OtherIPv6"/>).</summary>
    public readonly bool IsIPv6 => Kind is PacketKind.Tcp6 or PacketKind.Udp6 or PacketKind.Icmp6 or PacketKind.OtherIPv6;
    /// <summary>True for TCP over either IP version (<see cref="PacketKind.Tcp"/> or <see cref="PacketKind.Tcp6"/>).</summary>
    public readonly bool IsTcp => Kind is PacketKind.Tcp or PacketKind.Tcp6;
    /// <summary>
    /// IP header length in bytes: IPv4 IHL*4; IPv6 the 40-byte header plus the extension headers walked (up to the
    /// upper-layer header, or up to and including the Fragment header of a fragment). 0 when not IP.
    /// </summary>
    public int IpHeaderLength { get; private set; }
    /// <summary>IP packet length in bytes (IPv4 total length; IPv6 40 + payload length); 0 when not IP. Bytes after it are padding.</summary>
    public int IpTotalLength { get; private set; }
    /// <summary>IPv4 protocol number, or the IPv6 next header where the extension-header walk stopped; 0 when not IP.</summary>
    public byte Protocol { get; private set; }
    /// <summary>IPv4 source address (host order); 0 when not IPv4 (see <see cref="SrcAddress"/>).</summary>
    public uint SrcIp { get; private set; }
    /// <summary>IPv4 destination address (host order); 0 when not IPv4 (see <see cref="DstAddress"/>).</summary>
    public uint DstIp { get; private set; }
    /// <summary>Source address as 128 bits (host order): the IPv6 address, or IPv4-mapped ::ffff:a.b.c.d for IPv4; 0 when not IP.</summary>
    public UInt128 SrcAddress { get; private set; }
    /// <summary>Destination address as 128 bits (host order): the IPv6 address, or IPv4-mapped ::ffff:a.b.c.d for IPv4; 0 when not IP.</summary>
    public UInt128 DstAddress { get; private set; }
    /// <summary>
    /// IPv4: the flags and fragment offset field (host order). IPv6: bytes 2–3 of the Fragment header (offset &lt;&lt; 3,
    /// reserved bits, M flag), 0 when there is none.
    /// </summary>
    public ushort FragmentField { get; private set; }
    /// <summary>Offset of the IPv6 Fragment header, 0 when there is none (always 0 for IPv4).</summary>
    public int FragmentHeaderOffset { get; private set; }
    /// <summary>Number of IPv6 extension headers walked (0 for IPv4).</summary>
    public int ExtensionHeaderCount { get; private set; }
    /// <summary>Offset of the transport header (TCP, UDP, ICMP, ICMPv6) or where IP parsing stopped; 0 when not IP.</summary>
    public int L4Offset { get; private set; }
    /// <summary>TCP/UDP source port; 0 otherwise.</summary>
    public ushort SrcPort { get; private set; }
    /// <summary>TCP/UDP destination port; 0 otherwise.</summary>
    public ushort DstPort { get; private set; }
    /// <summary>TCP sequence number.</summary>
    public uint Seq { get; private set; }
    /// <summary>TCP acknowledgement number (meaningful only with <see cref="TcpFlags.Ack"/>).</summary>
    public uint AckNumber { get; private set; }
    /// <summary>TCP flags.</summary>
    public TcpFlags Flags { get; private set; }
    /// <summary>TCP header length in bytes (data offset*4); 0 when not TCP.</summary>
    public int TcpHeaderLength { get; private set; }
    /// <summary>Offset of the first SACK block (after the kind/length bytes), 0 when no SACK option.</summary>
    public int SackOffset { get; private set; }
    /// <summary>Number of 8-byte SACK blocks at <see cref="SackOffset"/>.</summary>
    public int SackBlockCount { get; private set; }
    /// <summary>Offset of the TCP timestamps option (its kind byte), 0 when absent.</summary>
    public int TimestampOptionOffset { get; private set; }
    /// <summary>
    /// Offset of the compared payload: TCP/UDP payload, the whole ICMP/ICMPv6 message, the ARP packet, the IPv4 payload
    /// for <see cref="PacketKind.OtherIPv4"/>, the IPv6 payload (everything after the 40-byte header, extension headers
    /// included) for <see cref="PacketKind.OtherIPv6"/>. 0 for <see cref="PacketKind.Other"/>.
    /// </summary>
    public int PayloadOffset { get; private set; }
    /// <summary>Length in bytes of the region at <see cref="PayloadOffset"/>.</summary>
    public int PayloadLength { get; private set; }

    /// <summary>The region described by <see cref="PayloadOffset"/>/<see cref="PayloadLength"/>.</summary>
    public readonly ReadOnlySpan<byte> Payload => Frame.Slice(PayloadOffset, PayloadLength);

    /// <summary>The IP packet (header + payload, without Ethernet padding); empty when not IP.</summary>
    public readonly ReadOnlySpan<byte> IpPacket => IpTotalLength == 0 ? default : Frame.Slice(L3Offset, IpTotalLength);

    /// <summary>The TCP segment (header + payload); empty when not TCP.</summary>
    public readonly ReadOnlySpan<byte> TcpSegment => IsTcp ? Frame.Slice(L4Offset, L3Offset + IpTotalLength - L4Offset) : default;

    /// <summary>True when the flag is set (TCP only).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly bool Has(TcpFlags flag) => (Flags & flag) != 0;

    /// <summary>
    /// Sequence space occupied by a TCP segment: payload length plus one for SYN and one for FIN.
    /// </summary>
    public readonly int SequenceLength => PayloadLength + ((Flags & TcpFlags.Syn) != 0 ? 1 : 0) + ((Flags & TcpFlags.Fin) != 0 ? 1 : 0);

    /// <summary>An IPv4 address as an IPv4-mapped IPv6 address (::ffff:a.b.c.d).</summary>
    /// <param name="ipv4">The IPv4 address (host order).</param>
    /// <returns>The 128-bit mapped address.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static UInt128 MapIPv4(uint ipv4) => new(0, 0xFFFF_0000_0000UL | ipv4);

    /// <summary>
    /// Parses <paramref name="frame"/>. Never throws and never reads outside the span. Allocates nothing: the view
    /// is filled in place.
    /// </summary>
    /// <param name="frame">A complete Ethernet frame (destination MAC first, no FCS required).</param>
    /// <param name="view">The parsed view; on failure it carries only <see cref="Frame"/> (kind <see cref="PacketKind.Other"/>).</param>
    /// <param name="kind"><see cref="BadFrameKind.None"/> on success, else why the frame is malformed.</param>
    /// <returns>True when the frame is well formed (unknown ethertypes are well formed, kind <see cref="PacketKind.Other"/>).</returns>
    public static bool TryParse(ReadOnlySpan<byte> frame, out PacketView view, out BadFrameKind kind)
    {
        view = default;
        view.Frame = frame;
        kind = ParseEthernet(ref view);
        if (kind == BadFrameKind.None)
        {
            return true;
        }
        view = default;
        view.Frame = frame;
        return false;
    }

    // The Parse* helpers fill the view in place (no copies of this large struct) and return why the frame is bad;
    // TryParse clears a partly filled view on failure.

    private static BadFrameKind ParseEthernet(ref PacketView v)
    {
        ReadOnlySpan<byte> frame = v.Frame;
        if (frame.Length < EthernetHeaderLength)
        {
            return BadFrameKind.TruncatedEthernet;
        }
        int l3 = EthernetHeaderLength;
        ushort etherType = BinaryPrimitives.ReadUInt16BigEndian(frame.Slice(12, 2));
        int tags = 0;
        ushort tci = 0;
        while (etherType == EtherTypeVlan || etherType == EtherTypeQinQ)
        {
            if (tags == MaxVlanTags)
            {
                return BadFrameKind.TooManyVlanTags;
            }
            if (frame.Length < l3 + 4)
            {
                return BadFrameKind.TruncatedEthernet;
            }
            if (tags == 0)
            {
                tci = BinaryPrimitives.ReadUInt16BigEndian(frame.Slice(l3, 2));
            }
            etherType = BinaryPrimitives.ReadUInt16BigEndian(frame.Slice(l3 + 2, 2));
            l3 += 4;
            tags++;
        }
        v.EtherType = etherType;
        v.VlanCount = tags;
        v.VlanTci = tci;
        v.L3Offset = l3;
        return etherType switch
        {
            EtherTypeIPv4 => ParseIPv4(ref v),
            EtherTypeIPv6 => ParseIPv6(ref v),
            EtherTypeArp => ParseArp(ref v),
            _ => BadFrameKind.None, // Kind Other
        };
    }

    private static BadFrameKind ParseArp(ref PacketView v)
    {
        ReadOnlySpan<byte> frame = v.Frame;
        int l3 = v.L3Offset;
        int avail = frame.Length - l3;
        if (avail < 8)
        {
            return BadFrameKind.TruncatedArp;
        }
        int hlen = frame[l3 + 4];
        int plen = frame[l3 + 5];
        int len = 8 + 2 * (hlen + plen);
        if (len > avail)
        {
            return BadFrameKind.TruncatedArp;
        }
        v.Kind = PacketKind.Arp;
        v.PayloadOffset = l3;
        v.PayloadLength = len;
        return BadFrameKind.None;
    }

    private static BadFrameKind ParseIPv4(ref PacketView v)
    {
        int l3 = v.L3Offset;
        int avail = v.Frame.Length - l3;
        if (avail < 20)
        {
            return BadFrameKind.TruncatedIp;
        }
        ReadOnlySpan<byte> ip = v.Frame.Slice(l3);
        if ((ip[0] >> 4) != 4)
        {
            return BadFrameKind.IpVersion;
        }
        int ihl = (ip[0] & 0x0F) * 4;
        if (ihl < 20 || ihl > avail)
        {
            return BadFrameKind.IpHeaderLength;
        }
        int total = BinaryPrimitives.ReadUInt16BigEndian(ip.Slice(2, 2));
        if (total < ihl || total > avail)
        {
            return BadFrameKind.IpTotalLength;
        }
        ushort frag = BinaryPrimitives.ReadUInt16BigEndian(ip.Slice(6, 2));
        byte proto = ip[9];
        uint src = BinaryPrimitives.ReadUInt32BigEndian(ip.Slice(12, 4));
        uint dst = BinaryPrimitives.ReadUInt32BigEndian(ip.Slice(16, 4));
        int l4 = l3 + ihl;
        v.Kind = PacketKind.OtherIPv4;
        v.IpHeaderLength = ihl;
        v.IpTotalLength = total;
        v.Protocol = proto;
        v.SrcIp = src;
        v.DstIp = dst;
        v.SrcAddress = MapIPv4(src);
        v.DstAddress = MapIPv4(dst);
        v.FragmentField = frag;
        v.L4Offset = l4;
        v.PayloadOffset = l4;
        v.PayloadLength = total - ihl;

        // Fragments (MF set or a non-zero offset) are never parsed past the IP header.
        if ((frag & 0x3FFF) != 0)
        {
            return BadFrameKind.None;
        }
        switch (proto)
        {
            case ProtocolTcp:
                return ParseTcp(ref v, PacketKind.Tcp);
            case ProtocolUdp:
                return ParseUdp(ref v, PacketKind.Udp);
            case ProtocolIcmp:
                if (total - ihl < 8)
                {
                    return BadFrameKind.TruncatedIcmp;
                }
                v.Kind = PacketKind.Icmp;
                return BadFrameKind.None;
            default:
                return BadFrameKind.None;
        }
    }

    private static BadFrameKind ParseIPv6(ref PacketView v)
    {
        int l3 = v.L3Offset;
        int avail = v.Frame.Length - l3;
        if (avail < Ipv6HeaderLength)
        {
            return BadFrameKind.TruncatedIpv6;
        }
        ReadOnlySpan<byte> ip = v.Frame.Slice(l3);
        if ((ip[0] >> 4) != 6)
        {
            return BadFrameKind.IpVersion;
        }
        int total = Ipv6HeaderLength + BinaryPrimitives.ReadUInt16BigEndian(ip.Slice(4, 2));
        if (total > avail)
        {
            return BadFrameKind.Ipv6PayloadLength;
        }
        ip = ip.Slice(0, total); // without Ethernet padding: every read below is bounded by the IPv6 packet
        byte next = ip[6];
        int off = Ipv6HeaderLength;
        int count = 0;
        bool fragment = false;
        while (next is NextHeaderHopByHop or NextHeaderRouting or NextHeaderDestinationOptions or NextHeaderFragment or NextHeaderAuthentication)
        {
            if (count == MaxExtensionHeaders)
            {
                return BadFrameKind.TooManyExtensionHeaders;
            }
            // Every extension header is at least 8 bytes: next header, length, 6 more.
            if (total - off < 8)
            {
                return BadFrameKind.Ipv6ExtensionHeader;
            }
            int len = next switch
            {
                NextHeaderFragment => 8,
                NextHeaderAuthentication => (ip[off + 1] + 2) * 4,
                _ => (ip[off + 1] + 1) * 8,
            };
            if (len > total - off)
            {
                return BadFrameKind.Ipv6ExtensionHeader;
            }
            if (next == NextHeaderFragment)
            {
                ushort field = BinaryPrimitives.ReadUInt16BigEndian(ip.Slice(off + 2, 2));
                v.FragmentHeaderOffset = l3 + off;
                v.FragmentField = field;
                // Offset (high 13 bits) or M (bit 0): a real fragment. An atomic fragment (RFC 6946) is parsed through.
                fragment = (field & 0xFFF9) != 0;
            }
            next = ip[off];
            off += len;
            count++;
            if (fragment)
            {
                break;
            }
        }

        int l4 = l3 + off;
        v.Kind = PacketKind.OtherIPv6;
        v.IpHeaderLength = off;
        v.IpTotalLength = total;
        v.Protocol = next;
        v.SrcAddress = BinaryPrimitives.ReadUInt128BigEndian(ip.Slice(8, 16));
        v.DstAddress = BinaryPrimitives.ReadUInt128BigEndian(ip.Slice(24, 16));
        v.ExtensionHeaderCount = count;
        v.L4Offset = l4;
        v.PayloadOffset = l3 + Ipv6HeaderLength;
        v.PayloadLength = total - Ipv6HeaderLength;
        if (fragment)
        {
            return BadFrameKind.None;
        }
        switch (next)
        {
            case ProtocolTcp:
                return ParseTcp(ref v, PacketKind.Tcp6);
            case ProtocolUdp:
                return ParseUdp(ref v, PacketKind.Udp6);
            case ProtocolIcmpv6:
                if (total - off < 4)
                {
                    return BadFrameKind.TruncatedIcmp;
                }
                v.Kind = PacketKind.Icmp6;
                v.PayloadOffset = l4;
                v.PayloadLength = total - off;
                return BadFrameKind.None;
            default:
                return BadFrameKind.None;
        }
    }

    /// <summary>Parses the TCP header at the L4 offset, bounded by the IP packet.</summary>
    private static BadFrameKind ParseTcp(ref PacketView v, PacketKind tcpKind)
    {
        int l4 = v.L4Offset;
        int l4Len = v.L3Offset + v.IpTotalLength - l4;
        if (l4Len < 20)
        {
            return BadFrameKind.TruncatedTcp;
        }
        ReadOnlySpan<byte> seg = v.Frame.Slice(l4, l4Len);
        int doff = (seg[12] >> 4) * 4;
        if (doff < 20 || doff > l4Len)
        {
            return BadFrameKind.TcpDataOffset;
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
                return BadFrameKind.TcpOptions;
            }
            int optLen = seg[i + 1];
            if (optLen < 2 || i + optLen > doff)
            {
                return BadFrameKind.TcpOptions;
            }
            if (optKind == 5)
            {
                if (optLen < 10 || ((optLen - 2) & 7) != 0)
                {
                    return BadFrameKind.TcpOptions;
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
        v.Kind = tcpKind;
        v.SrcPort = BinaryPrimitives.ReadUInt16BigEndian(seg);
        v.DstPort = BinaryPrimitives.ReadUInt16BigEndian(seg.Slice(2, 2));
        v.Seq = BinaryPrimitives.ReadUInt32BigEndian(seg.Slice(4, 4));
        v.AckNumber = BinaryPrimitives.ReadUInt32BigEndian(seg.Slice(8, 4));
        v.Flags = (TcpFlags)seg[13];
        v.TcpHeaderLength = doff;
        v.SackOffset = sackOff;
        v.SackBlockCount = sackCount;
        v.TimestampOptionOffset = tsOff;
        v.PayloadOffset = l4 + doff;
        v.PayloadLength = l4Len - doff;
        return BadFrameKind.None;
    }

    /// <summary>Parses the UDP header at the L4 offset, bounded by the IP packet.</summary>
    private static BadFrameKind ParseUdp(ref PacketView v, PacketKind udpKind)
    {
        int l4 = v.L4Offset;
        int l4Len = v.L3Offset + v.IpTotalLength - l4;
        if (l4Len < 8)
        {
            return BadFrameKind.TruncatedUdp;
        }
        ReadOnlySpan<byte> seg = v.Frame.Slice(l4, l4Len);
        int udpLen = BinaryPrimitives.ReadUInt16BigEndian(seg.Slice(4, 2));
        if (udpLen < 8 || udpLen > l4Len)
        {
            return BadFrameKind.TruncatedUdp;
        }
        v.Kind = udpKind;
        v.SrcPort = BinaryPrimitives.ReadUInt16BigEndian(seg);
        v.DstPort = BinaryPrimitives.ReadUInt16BigEndian(seg.Slice(2, 2));
        v.PayloadOffset = l4 + 8;
        v.PayloadLength = udpLen - 8;
        return BadFrameKind.None;
    }
}
