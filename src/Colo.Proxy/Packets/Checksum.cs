using System.Buffers.Binary;

namespace Colo.Proxy;

/// <summary>
/// Internet checksum helpers (RFC 1071) and incremental update (RFC 1624). Checksums are returned in host order;
/// write them with <see cref="BinaryPrimitives.WriteUInt16BigEndian(Span{byte}, ushort)"/>.
/// </summary>
public static class Checksum
{
    /// <summary>One's-complement sum of <paramref name="data"/> as big-endian 16-bit words (odd tail padded with 0), not folded.</summary>
    /// <param name="data">Bytes to sum.</param>
    /// <param name="initial">Running sum to continue from.</param>
    /// <returns>The unfolded 64-bit running sum.</returns>
    public static ulong Sum(ReadOnlySpan<byte> data, ulong initial = 0)
    {
        ulong sum = initial;
        int i = 0;
        for (; i + 4 <= data.Length; i += 4)
        {
            sum += BinaryPrimitives.ReadUInt32BigEndian(data.Slice(i, 4));
        }
        for (; i + 2 <= data.Length; i += 2)
        {
            sum += BinaryPrimitives.ReadUInt16BigEndian(data.Slice(i, 2));
        }
        if (i < data.Length)
        {
            sum += (ulong)data[i] << 8;
        }
        return sum;
    }

    /// <summary>Folds a running sum to 16 bits and complements it.</summary>
    /// <param name="sum">Unfolded sum from <see cref="Sum"/>.</param>
    /// <returns>The checksum value (host order).</returns>
    public static ushort Finish(ulong sum)
    {
        while ((sum >> 16) != 0)
        {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }
        return (ushort)~sum;
    }

    /// <summary>Computes the IPv4 header checksum, treating the checksum field (bytes 10–11) as zero.</summary>
    /// <param name="header">The IPv4 header (IHL*4 bytes).</param>
    /// <returns>The checksum to store at bytes 10–11.</returns>
    /// <exception cref="ArgumentException">The header is shorter than 20 bytes.</exception>
    public static ushort IPv4Header(ReadOnlySpan<byte> header)
    {
        if (header.Length < 20)
        {
            throw new ArgumentException("IPv4 header must be at least 20 bytes.", nameof(header));
        }
        ulong sum = Sum(header.Slice(0, 10));
        sum = Sum(header.Slice(12), sum);
        return Finish(sum);
    }

    /// <summary>
    /// Computes a TCP/UDP checksum over the IPv4 pseudo-header and <paramref name="segment"/>, treating the
    /// 2 bytes at <paramref name="checksumOffset"/> as zero.
    /// </summary>
    /// <param name="srcIp">Source address (host order).</param>
    /// <param name="dstIp">Destination address (host order).</param>
    /// <param name="protocol">IP protocol number (6 TCP, 17 UDP).</param>
    /// <param name="segment">Transport header and payload.</param>
    /// <param name="checksumOffset">Offset of the checksum field inside the segment (16 for TCP, 6 for UDP).</param>
    /// <returns>The checksum (host order).</returns>
    public static ushort Transport(uint srcIp, uint dstIp, byte protocol, ReadOnlySpan<byte> segment, int checksumOffset)
    {
        ulong sum = (ulong)srcIp + dstIp + protocol + (ulong)segment.Length;
        sum = Sum(segment.Slice(0, checksumOffset), sum);
        sum = Sum(segment.Slice(checksumOffset + 2), sum);
        return Finish(sum);
    }

    /// <summary>
    /// Computes a TCP/UDP/ICMPv6 checksum over the IPv6 pseudo-header (RFC 8200 section 8.1) and
    /// <paramref name="segment"/>, treating the 2 bytes at <paramref name="checksumOffset"/> as zero.
    /// </summary>
    /// <param name="addresses">The 32 bytes of source then destination address (bytes 8–39 of the IPv6 header).</param>
    /// <param name="nextHeader">Upper-layer protocol (6 TCP, 17 UDP, 58 ICMPv6).</param>
    /// <param name="segment">Upper-layer header and payload.</param>
    /// <param name="checksumOffset">Offset of the checksum field inside the segment (16 TCP, 6 UDP, 2 ICMPv6).</param>
    /// <returns>The checksum (host order).</returns>
    /// <exception cref="ArgumentException"><paramref name="addresses"/> is not 32 bytes.</exception>
    public static ushort TransportIPv6(ReadOnlySpan<byte> addresses, byte nextHeader, ReadOnlySpan<byte> segment, int checksumOffset)
    {
        if (addresses.Length != 32)
        {
            throw new ArgumentException("IPv6 source and destination address must be 32 bytes.", nameof(addresses));
        }
        ulong sum = Sum(addresses, nextHeader + (ulong)segment.Length);
        sum = Sum(segment.Slice(0, checksumOffset), sum);
        sum = Sum(segment.Slice(checksumOffset + 2), sum);
        return Finish(sum);
    }

    /// <summary>Recomputes and stores the TCP checksum of a parsed TCP frame (IPv4 or IPv6).</summary>
    /// <param name="frame">The frame, writable; must be the bytes <paramref name="view"/> was parsed from.</param>
    /// <param name="view">A view with <see cref="PacketView.IsTcp"/>.</param>
    /// <exception cref="ArgumentException">The view is not TCP.</exception>
    public static void RecomputeTcp(Span<byte> frame, in PacketView view)
    {
        if (!view.IsTcp)
        {
            throw new ArgumentException("Not a TCP frame.", nameof(view));
        }
        int len = view.L3Offset + view.IpTotalLength - view.L4Offset;
        Span<byte> seg = frame.Slice(view.L4Offset, len);
        ushort c = view.Kind == PacketKind.Tcp6
            ? TransportIPv6(frame.Slice(view.L3Offset + 8, 32), PacketView.ProtocolTcp, seg, 16)
            : Transport(view.SrcIp, view.DstIp, PacketView.ProtocolTcp, seg, 16);
        BinaryPrimitives.WriteUInt16BigEndian(seg.Slice(16, 2), c);
    }

    /// <summary>True when the stored TCP checksum of a parsed TCP frame (IPv4 or IPv6) is correct.</summary>
    /// <param name="view">A TCP view.</param>
    /// <returns>True when valid; false when wrong or when the view is not TCP.</returns>
    public static bool VerifyTcp(in PacketView view)
    {
        if (!view.IsTcp)
        {
            return false;
        }
        ReadOnlySpan<byte> seg = view.TcpSegment;
        ulong sum = PacketView.ProtocolTcp + (ulong)seg.Length;
        sum = view.Kind == PacketKind.Tcp6
            ? Sum(view.Frame.Slice(view.L3Offset + 8, 32), sum)
            : sum + view.SrcIp + view.DstIp;
        return Finish(Sum(seg, sum)) == 0;
    }

    /// <summary>
    /// RFC 1624 incremental update (eqn. 3: HC' = ~(~HC + ~m + m')) for one 16-bit field changing from
    /// <paramref name="oldWord"/> to <paramref name="newWord"/>.
    /// </summary>
    /// <param name="checksum">The stored checksum (host order).</param>
    /// <param name="oldWord">Old field value (host order).</param>
    /// <param name="newWord">New field value (host order).</param>
    /// <returns>The updated checksum.</returns>
    public static ushort Update16(ushort checksum, ushort oldWord, ushort newWord)
    {
        uint sum = (uint)(ushort)~checksum + (ushort)~oldWord + newWord;
        sum = (sum & 0xFFFF) + (sum >> 16);
        sum = (sum & 0xFFFF) + (sum >> 16);
        return (ushort)~sum;
    }

    /// <summary>Incremental update for one 32-bit field (two 16-bit words).</summary>
    /// <param name="checksum">The stored checksum (host order).</param>
    /// <param name="oldValue">Old 32-bit value (host order).</param>
    /// <param name="newValue">New 32-bit value (host order).</param>
    /// <returns>The updated checksum.</returns>
    public static ushort Update32(ushort checksum, uint oldValue, uint newValue)
    {
        checksum = Update16(checksum, (ushort)(oldValue >> 16), (ushort)(newValue >> 16));
        return Update16(checksum, (ushort)oldValue, (ushort)newValue);
    }
}
