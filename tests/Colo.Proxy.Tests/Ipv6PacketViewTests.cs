using System.Buffers.Binary;
using static Colo.Proxy.Tests.Frames;

namespace Colo.Proxy.Tests;

/// <summary>IPv6 and stacked-VLAN parsing (issue 4, item 5).</summary>
public class Ipv6PacketViewTests
{
    [Fact]
    public void Parse_Ipv6Tcp_FieldsCorrect_ChecksumsVerifyAndRecompute()
    {
        byte[] opts = { 1, 1, 5, 10, 0, 0, 0, 10, 0, 0, 0, 20 };
        byte[] f = Out6(0xDEADBEEF, 0x01020304, ACK | PSH, Bytes("payload"), hopLimit: 17, flowLabel: 0xABCDE, options: opts);
        Assert.True(PacketView.TryParse(f, out PacketView v, out BadFrameKind k));
        Assert.Equal(BadFrameKind.None, k);
        Assert.Equal(PacketKind.Tcp6, v.Kind);
        Assert.True(v.IsIPv6);
        Assert.True(v.IsTcp);
        Assert.Equal(PacketView.EtherTypeIPv6, v.EtherType);
        Assert.Equal(14, v.L3Offset);
        Assert.Equal(40, v.IpHeaderLength);
        Assert.Equal(54, v.L4Offset);
        Assert.Equal(6, v.Protocol);
        Assert.Equal(0, v.ExtensionHeaderCount);
        Assert.Equal(0, v.FragmentHeaderOffset);
        Assert.Equal(GuestIp6, v.SrcAddress);
        Assert.Equal(ClientIp6, v.DstAddress);
        Assert.Equal(0u, v.SrcIp);
        Assert.Equal(GuestPort, v.SrcPort);
        Assert.Equal(ClientPort, v.DstPort);
        Assert.Equal(0xDEADBEEF, v.Seq);
        Assert.Equal(0x01020304u, v.AckNumber);
        Assert.Equal(TcpFlags.Ack | TcpFlags.Psh, v.Flags);
        Assert.Equal(1, v.SackBlockCount);
        Assert.Equal(10u, BinaryPrimitives.ReadUInt32BigEndian(f.AsSpan(v.SackOffset)));
        Assert.Equal("payload", System.Text.Encoding.ASCII.GetString(v.Payload));
        Assert.Equal(f.Length - 14, v.IpTotalLength);
        Assert.Equal(f.Length - 54, v.TcpSegment.Length);

        Assert.True(Checksum.VerifyTcp(v));
        ushort stored = BinaryPrimitives.ReadUInt16BigEndian(f.AsSpan(54 + 16));
        f[54 + 16] ^= 0x55;
        Assert.True(PacketView.TryParse(f, out v, out _));
        Assert.False(Checksum.VerifyTcp(v));
        Checksum.RecomputeTcp(f, v);
        Assert.Equal(stored, BinaryPrimitives.ReadUInt16BigEndian(f.AsSpan(54 + 16)));
    }

    [Fact]
    public void Parse_Ipv4_AddressesAlsoAsIpv4Mapped()
    {
        byte[] f = Out(1, 2, ACK, Bytes("x"));
        Assert.True(PacketView.TryParse(f, out PacketView v, out _));
        Assert.False(v.IsIPv6);
        Assert.Equal(new UInt128(0, 0xFFFF_0A00_0002), v.SrcAddress);
        Assert.Equal(PacketView.MapIPv4(ClientIp), v.DstAddress);
    }

    [Fact]
    public void Parse_HopByHopAndDestinationOptions_WalkedToTcp()
    {
        Ext[] chain = { new(HopByHop, 8), new(DestOpts, 16) };
        byte[] f = Out6(1000, 2000, ACK, Bytes("through the chain"), ext: chain);
        Assert.True(PacketView.TryParse(f, out PacketView v, out BadFrameKind k), k.ToString());
        Assert.Equal(PacketKind.Tcp6, v.Kind);
        Assert.Equal(2, v.ExtensionHeaderCount);
        Assert.Equal(40 + 24, v.IpHeaderLength);
        Assert.Equal(14 + 64, v.L4Offset);
        Assert.Equal(1000u, v.Seq);
        Assert.Equal("through the chain", System.Text.Encoding.ASCII.GetString(v.Payload));
        Assert.True(Checksum.VerifyTcp(v));
    }

    [Fact]
    public void Parse_RoutingAuthenticationAndAtomicFragment_WalkedToUdp()
    {
        Ext[] chain = { new(Routing, 24), new(Ah, 24), new(Fragment, 8, FragmentField: 0, FragmentId: 77) };
        byte[] f = Udp6(GuestIp6, 53, ClientIp6, 3333, Bytes("dns"), ext: chain);
        Assert.True(PacketView.TryParse(f, out PacketView v, out BadFrameKind k), k.ToString());
        Assert.Equal(PacketKind.Udp6, v.Kind);
        Assert.Equal(3, v.ExtensionHeaderCount);
        Assert.Equal(14 + 40 + 24 + 24, v.FragmentHeaderOffset);
        Assert.Equal((ushort)53, v.SrcPort);
        Assert.Equal("dns", System.Text.Encoding.ASCII.GetString(v.Payload));
    }

    [Fact]
    public void Parse_Ipv6_EthernetPaddingAllowed()
    {
        byte[] f = Icmp6EchoReply(1, 2, default);
        Assert.Equal(62, f.Length);
        byte[] padded = new byte[64];
        f.CopyTo(padded, 0);
        padded[62] = 0xEE;
        Assert.True(PacketView.TryParse(padded, out PacketView v, out _));
        Assert.Equal(PacketKind.Icmp6, v.Kind);
        Assert.Equal(8, v.PayloadLength);
        Assert.Equal(48, v.IpTotalLength);
    }

    [Theory]
    [InlineData(8, 0, PacketKind.OtherIPv6)]      // non-first fragment: offset 1 (8 bytes), M = 0
    [InlineData(0, 1, PacketKind.OtherIPv6)]      // first fragment: offset 0, M = 1
    [InlineData(0x100, 1, PacketKind.OtherIPv6)]  // middle fragment
    [InlineData(0, 0, PacketKind.Tcp6)]           // atomic fragment (RFC 6946): parsed through
    public void Parse_Fragments_AreOtherIPv6_AtomicParsedThrough(int offsetBytes, int more, PacketKind expected)
    {
        ushort field = (ushort)((offsetBytes / 8) << 3 | more);
        byte[] f = Out6(1, 2, ACK, Bytes("fragment data"), ext: new Ext[] { new(Fragment, 8, field, 0x12345678) });
        Assert.True(PacketView.TryParse(f, out PacketView v, out _));
        Assert.Equal(expected, v.Kind);
        Assert.Equal(14 + 40, v.FragmentHeaderOffset);
        Assert.Equal(field, v.FragmentField);
        if (expected == PacketKind.OtherIPv6)
        {
            Assert.Equal(6, v.Protocol); // the next header after the Fragment header
            Assert.Equal(14 + 40, v.PayloadOffset);
            Assert.Equal(f.Length - 54, v.PayloadLength);
            Assert.Equal(14 + 48, v.L4Offset);
            Assert.True(v.IsIPv6);
            Assert.False(v.IsTcp);
        }
    }

    [Theory]
    [InlineData(Esp)]
    [InlineData(NoNext)]
    [InlineData(PacketView.ProtocolIcmp)] // ICMP for IPv4 inside IPv6: not ICMPv6
    public void Parse_UnknownNextHeader_IsOtherIPv6_WholePayload(byte nextHeader)
    {
        byte[] f = Ip6(GuestIp6, ClientIp6, nextHeader, new byte[] { 1, 2, 3, 4, 5 }, new Ext[] { new(DestOpts, 8) });
        Assert.True(PacketView.TryParse(f, out PacketView v, out _));
        Assert.Equal(PacketKind.OtherIPv6, v.Kind);
        Assert.Equal(nextHeader, v.Protocol);
        Assert.Equal(1, v.ExtensionHeaderCount);
        Assert.Equal(13, v.PayloadLength);
        Assert.Equal(14 + 48, v.L4Offset);
    }

    [Fact]
    public void Parse_NeighbourAdvertisement_IsIcmp6_WholeMessage()
    {
        UInt128 target = GuestIp6;
        byte[] f = NeighbourAdvertisement(target);
        Assert.True(PacketView.TryParse(f, out PacketView v, out _));
        Assert.Equal(PacketKind.Icmp6, v.Kind);
        Assert.Equal(PacketView.ProtocolIcmpv6, v.Protocol);
        Assert.Equal(32, v.PayloadLength);
        Assert.Equal(136, v.Payload[0]);
        Assert.Equal(target, BinaryPrimitives.ReadUInt128BigEndian(v.Payload.Slice(8)));
    }

    public static TheoryData<string, BadFrameKind> BadIpv6Frames() => new()
    {
        { "header cut at 39 bytes", BadFrameKind.TruncatedIpv6 },
        { "payload length past the frame", BadFrameKind.Ipv6PayloadLength },
        { "extension header length past the payload", BadFrameKind.Ipv6ExtensionHeader },
        { "payload ends inside an extension header", BadFrameKind.Ipv6ExtensionHeader },
        { "nine extension headers", BadFrameKind.TooManyExtensionHeaders },
        { "version 4 under ethertype 0x86dd", BadFrameKind.IpVersion },
        { "tcp data offset past the end", BadFrameKind.TcpDataOffset },
        { "tcp segment of 19 bytes", BadFrameKind.TruncatedTcp },
        { "udp length past the end", BadFrameKind.TruncatedUdp },
        { "icmpv6 of 3 bytes", BadFrameKind.TruncatedIcmp },
    };

    /// <summary>The malformed IPv6 frames used by the parser and engine tests, by name.</summary>
    internal static byte[] BadIpv6Frame(string name) => name switch
    {
        "header cut at 39 bytes" => Out6(1, 2, ACK, default).AsSpan(0, 14 + 39).ToArray(),
        "payload length past the frame" =>
            Patch(Out6(1, 2, ACK, Bytes("abc")), f => BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(18), (ushort)(f.Length - 54 + 1))),
        // (10+1)*8 = 88 bytes of hop-by-hop options in a 31-byte payload
        "extension header length past the payload" =>
            Patch(Out6(1, 2, ACK, Bytes("abc"), ext: new Ext[] { new(HopByHop, 8) }), f => f[54 + 1] = 10),
        // Payload length 12: the hop-by-hop header and 4 bytes of the destination options
        "payload ends inside an extension header" =>
            Patch(Out6(1, 2, ACK, default, ext: new Ext[] { new(HopByHop, 8), new(DestOpts, 16) }),
                f => BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(18), 12)),
        "nine extension headers" => Out6(1, 2, ACK, default, ext: Enumerable.Range(0, 9).Select(_ => new Ext(DestOpts, 8)).ToArray()),
        "version 4 under ethertype 0x86dd" => Patch(Out6(1, 2, ACK, default), f => f[14] = 0x40),
        // A 24-byte TCP header in a 20-byte segment
        "tcp data offset past the end" => Patch(Out6(1, 2, ACK, default), f => f[54 + 12] = 0x60),
        "tcp segment of 19 bytes" => Patch(Out6(1, 2, ACK, default), f => BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(18), 19)),
        "udp length past the end" =>
            Patch(Udp6(GuestIp6, 1, ClientIp6, 2, Bytes("abc")), f => BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(54 + 4), 12)),
        "icmpv6 of 3 bytes" => Ip6(GuestIp6, ClientIp6, 58, new byte[] { 129, 0, 0 }),
        _ => throw new ArgumentException(name),
    };

    private static byte[] Patch(byte[] frame, Action<byte[]> patch)
    {
        patch(frame);
        return frame;
    }

    [Theory]
    [MemberData(nameof(BadIpv6Frames))]
    public void Parse_MalformedIpv6_ReturnsKind_NoException(string name, BadFrameKind expected)
    {
        byte[] f = BadIpv6Frame(name);
        Assert.False(PacketView.TryParse(f, out PacketView v, out BadFrameKind k));
        Assert.Equal(expected, k);
        Assert.Equal(f.Length, v.Frame.Length);
        Assert.Equal(PacketKind.Other, v.Kind);
    }

    [Fact]
    public void Parse_EightExtensionHeaders_IsTheBound()
    {
        byte[] f = Out6(1, 2, ACK, Bytes("x"), ext: Enumerable.Range(0, PacketView.MaxExtensionHeaders).Select(_ => new Ext(DestOpts, 8)).ToArray());
        Assert.True(PacketView.TryParse(f, out PacketView v, out _));
        Assert.Equal(PacketKind.Tcp6, v.Kind);
        Assert.Equal(8, v.ExtensionHeaderCount);
    }

    [Fact]
    public void Parse_StackedVlanTags_Ipv6AndArp()
    {
        byte[] tcp = WithVlanTags(Out6(5, 6, ACK, Bytes("qinq")), (0x88A8, 100), (0x8100, 200));
        Assert.True(PacketView.TryParse(tcp, out PacketView v, out _));
        Assert.Equal(PacketKind.Tcp6, v.Kind);
        Assert.Equal(2, v.VlanCount);
        Assert.True(v.HasVlan);
        Assert.Equal(100, v.VlanTci);
        Assert.Equal(22, v.L3Offset);
        Assert.Equal("qinq", System.Text.Encoding.ASCII.GetString(v.Payload));
        Assert.True(Checksum.VerifyTcp(v));

        byte[] arp = WithVlanTags(ArpReply(GuestIp, ClientIp), (0x8100, 1), (0x8100, 2), (0x8100, 3));
        Assert.True(PacketView.TryParse(arp, out PacketView a, out _));
        Assert.Equal(PacketKind.Arp, a.Kind);
        Assert.Equal(3, a.VlanCount);
        Assert.Equal(26, a.PayloadOffset);
    }
}
