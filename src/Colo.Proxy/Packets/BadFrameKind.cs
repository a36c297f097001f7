namespace Colo.Proxy;

/// <summary>Why <see cref="PacketView.TryParse"/> rejected a frame. <see cref="None"/> means the frame parsed.</summary>
public enum BadFrameKind
{
    /// <summary>The frame parsed (possibly as an "other" protocol).</summary>
    None = 0,
    /// <summary>Shorter than an Ethernet header (14 bytes, 18 with an 802.1Q tag).</summary>
    TruncatedEthernet,
    /// <summary>IPv4 ethertype but fewer than 20 bytes of IP header, or a version other than 4.</summary>
    TruncatedIp,
    /// <summary>IPv4 ethertype but the version nibble is not 4.</summary>
    IpVersion,
    /// <summary>IPv4 IHL below 5 or the header (IHL*4) extends past the end of the frame.</summary>
    IpHeaderLength,
    /// <summary>IPv4 total length smaller than the header or larger than the bytes present.</summary>
    IpTotalLength,
    /// <summary>TCP segment shorter than 20 bytes.</summary>
    TruncatedTcp,
    /// <summary>TCP data offset below 5 or past the end of the IP packet.</summary>
    TcpDataOffset,
    /// <summary>A TCP option's length is malformed (zero, one, or running past the header).</summary>
    TcpOptions,
    /// <summary>UDP datagram shorter than 8 bytes or its length field disagrees with the IP packet.</summary>
    TruncatedUdp,
    /// <summary>ICMP message shorter than 8 bytes.</summary>
    TruncatedIcmp,
    /// <summary>ARP packet shorter than its declared hardware/protocol address lengths require.</summary>
    TruncatedArp,
}

/// <summary>What <see cref="PacketView"/> recognised the frame as.</summary>
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
