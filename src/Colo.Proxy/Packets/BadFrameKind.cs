namespace Colo.Proxy;

/// <summary>
/// Why <see cref="PacketView.TryParse"/> rejected a frame. <see cref="None"/> means the frame parsed. Numeric values are
/// stable (they index counters); new kinds are only ever appended.
/// </summary>
public enum BadFrameKind
{
    /// <summary>The frame parsed (possibly as an "other" protocol).</summary>
    None = 0,
    /// <summary>Shorter than an Ethernet header (14 bytes, plus 4 per VLAN tag), or cut off inside a VLAN tag.</summary>
    TruncatedEthernet,
    /// <summary>IPv4 ethertype but fewer than 20 bytes of IP header.</summary>
    TruncatedIp,
    /// <summary>The version nibble disagrees with the ethertype (not 4 for IPv4, not 6 for IPv6).</summary>
    IpVersion,
    /// <summary>IPv4 IHL below 5 or the header (IHL*4) extends past the end of the frame.</summary>
    IpHeaderLength,
    /// <summary>IPv4 total length smaller than the header or larger than the bytes present.</summary>
    IpTotalLength,
    /// <summary>TCP segment (IPv4 or IPv6) shorter than 20 bytes.</summary>
    TruncatedTcp,
    /// <summary>TCP data offset below 5 or past the end of the IP packet.</summary>
    TcpDataOffset,
    /// <summary>A TCP option's length is malformed (zero, one, or running past the header).</summary>
    TcpOptions,
    /// <summary>UDP datagram (IPv4 or IPv6) shorter than 8 bytes or its length field disagrees with the IP packet.</summary>
    TruncatedUdp,
    /// <summary>ICMP message shorter than 8 bytes, or ICMPv6 message shorter than 4 bytes (type, code, checksum).</summary>
    TruncatedIcmp,
    /// <summary>ARP packet shorter than its declared hardware/protocol address lengths require.</summary>
    TruncatedArp,
    /// <summary>More than <see cref="PacketView.MaxVlanTags"/> stacked VLAN tags (0x8100 / 0x88A8).</summary>
    TooManyVlanTags,
    /// <summary>IPv6 ethertype but fewer than 40 bytes of IPv6 header.</summary>
    TruncatedIpv6,
    /// <summary>IPv6 payload length runs past the end of the frame (40 + payload length &gt; bytes present).</summary>
    Ipv6PayloadLength,
    /// <summary>An IPv6 extension header (hop-by-hop, routing, fragment, destination options, AH) runs past the end of the IPv6 payload.</summary>
    Ipv6ExtensionHeader,
    /// <summary>More than <see cref="PacketView.MaxExtensionHeaders"/> IPv6 extension headers before the upper-layer header.</summary>
    TooManyExtensionHeaders,
}

/// <summary>What <see cref="PacketView"/> recognised the frame as. Numeric values are stable; new kinds are appended.</summary>
public enum PacketKind : byte
{
    /// <summary>Not parsed / unknown ethertype (compared byte-exact).</summary>
    Other = 0,
    /// <summary>ARP (ethertype 0x0806).</summary>
    Arp,
    /// <summary>IPv4 TCP segment (not a fragment).</summary>
    Tcp,
    /// <summary>IPv4 UDP datagram (not a fragment).</summary>
    Udp,
    /// <summary>IPv4 ICMP message (not a fragment).</summary>
    Icmp,
    /// <summary>Any other IPv4 packet, including every fragment.</summary>
    OtherIPv4,
    /// <summary>IPv6 TCP segment (not a fragment; extension headers walked).</summary>
    Tcp6,
    /// <summary>IPv6 UDP datagram (not a fragment).</summary>
    Udp6,
    /// <summary>ICMPv6 message (not a fragment), neighbour discovery included.</summary>
    Icmp6,
    /// <summary>
    /// Any other IPv6 packet: every fragment (a Fragment header with a non-zero offset or the M flag; atomic fragments
    /// are parsed through), an unknown or unsupported next header (ESP, No Next Header, ...). Compared byte-exact over
    /// the IPv6 payload, except a fragment's identification.
    /// </summary>
    OtherIPv6,
}

/// <summary>TCP header flag bits (byte 13 of the TCP header).</summary>
[Flags]
public enum TcpFlags : byte
{
    /// <summary>No flags.</summary>
    None = 0,
    /// <summary>FIN: sender finished; occupies one sequence number.</summary>
    Fin = 0x01,
    /// <summary>SYN: synchronise sequence numbers; occupies one sequence number.</summary>
    Syn = 0x02,
    /// <summary>RST: reset the connection.</summary>
    Rst = 0x04,
    /// <summary>PSH: push.</summary>
    Psh = 0x08,
    /// <summary>ACK: the acknowledgement number is valid.</summary>
    Ack = 0x10,
    /// <summary>URG: urgent pointer valid.</summary>
    Urg = 0x20,
    /// <summary>ECE: ECN echo.</summary>
    Ece = 0x40,
    /// <summary>CWR: congestion window reduced.</summary>
    Cwr = 0x80,
}
