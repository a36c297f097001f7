using System.Buffers.Binary;
using static Colo.Proxy.Tests.Frames;

namespace Colo.Proxy.Tests;

public class PacketViewTests
{
    [Fact]
    public void Parse_TcpWithVlanAndSack_FieldsCorrect()
    {
        byte[] opts = { 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1, 5, 18, 0, 0, 0, 10, 0, 0, 0, 20, 0, 0, 1, 0, 0, 0, 2, 0 };
        byte[] f = Tcp(GuestIp, 80, ClientIp, 1234, 0xDEADBEEF, 0x01020304, ACK | PSH, Bytes("payload"), opts, vlan: true);
        Assert.True(PacketView.TryParse(f, out PacketView v, out BadFrameKind k));
        Assert.Equal(BadFrameKind.None, k);
        Assert.Equal(PacketKind.Tcp, v.Kind);
        Assert.True(v.HasVlan);
        Assert.Equal(42, v.VlanTci);
        Assert.Equal(18, v.L3Offset);
        Assert.Equal(GuestIp, v.SrcIp);
        Assert.Equal((ushort)1234, v.DstPort);
        Assert.Equal(0xDEADBEEF, v.Seq);
        Assert.Equal(0x01020304u, v.AckNumber);
        Assert.Equal(TcpFlags.Ack | TcpFlags.Psh, v.Flags);
        Assert.Equal(2, v.SackBlockCount);
        Assert.Equal(10u, BinaryPrimitives.ReadUInt32BigEndian(f.AsSpan(v.SackOffset)));
        Assert.NotEqual(0, v.TimestampOptionOffset);
        Assert.Equal("payload", System.Text.Encoding.ASCII.GetString(v.Payload));
    }

    [Fact]
    public void Parse_DoubleTaggedQinQ_Ipv4Tcp()
    {
        byte[] f = WithVlanTags(Out(7, 8, ACK, Bytes("qinq")), (0x88A8, 0x2064), (0x8100, 42));
        Assert.True(PacketView.TryParse(f, out PacketView v, out BadFrameKind k));
        Assert.Equal(BadFrameKind.None, k);
        Assert.Equal(PacketKind.Tcp, v.Kind);
        Assert.Equal(PacketView.EtherTypeIPv4, v.EtherType);
        Assert.Equal(2, v.VlanCount);
        Assert.Equal(0x2064, v.VlanTci); // outer tag: PCP 1, VID 100
        Assert.Equal(22, v.L3Offset);
        Assert.Equal(GuestIp, v.SrcIp);
        Assert.Equal(7u, v.Seq);
        Assert.Equal("qinq", System.Text.Encoding.ASCII.GetString(v.Payload));
        Assert.True(Checksum.VerifyTcp(v));
    }

    [Fact]
    public void Parse_VlanStack_BoundedAndBoundsChecked()
    {
        byte[] four = WithVlanTags(Out(1, 2, ACK, default), (0x88A8, 1), (0x8100, 2), (0x8100, 3), (0x8100, 4));
        Assert.True(PacketView.TryParse(four, out PacketView v, out _));
        Assert.Equal(PacketKind.Tcp, v.Kind);
        Assert.Equal(PacketView.MaxVlanTags, v.VlanCount);

        byte[] five = WithVlanTags(Out(1, 2, ACK, default), (0x88A8, 1), (0x8100, 2), (0x8100, 3), (0x8100, 4), (0x8100, 5));
        Assert.False(PacketView.TryParse(five, out _, out BadFrameKind k5));
        Assert.Equal(BadFrameKind.TooManyVlanTags, k5);

        byte[] cut = WithVlanTags(Out(1, 2, ACK, default), (0x88A8, 1), (0x8100, 2)).AsSpan(0, 20).ToArray();
        Assert.False(PacketView.TryParse(cut, out _, out BadFrameKind kc));
        Assert.Equal(BadFrameKind.TruncatedEthernet, kc);

        byte[] noIp = WithVlanTags(Out(1, 2, ACK, default), (0x8100, 1)).AsSpan(0, 30).ToArray();
        Assert.False(PacketView.TryParse(noIp, out _, out BadFrameKind kt));
        Assert.Equal(BadFrameKind.TruncatedIp, kt);
    }

    [Fact]
    public void BadFrameKinds_AllFitTheCounters()
    {
        var h = new Harness();
        foreach (BadFrameKind k in Enum.GetValues<BadFrameKind>())
        {
            Assert.True((int)k < h.Engine.Counters.badFrames.Length, k.ToString());
        }
        Assert.Equal(11, (int)BadFrameKind.TruncatedArp); // numeric values are stable
    }

    [Fact]
    public void Parse_EthernetPadding_IgnoredViaTotalLength()
    {
        byte[] f = Out(1, 2, ACK, Bytes("ab"));
        byte[] padded = new byte[f.Length + 6];
        f.CopyTo(padded, 0);
        Assert.True(PacketView.TryParse(padded, out PacketView v, out _));
        Assert.Equal(2, v.PayloadLength);
    }

    [Fact]
    public void Parse_Fragment_IsOtherIPv4()
    {
        byte[] f = Udp(GuestIp, 1, ClientIp, 2, Bytes("frag"));
        f[20] = 0x20; // MF
        Assert.True(PacketView.TryParse(f, out PacketView v, out _));
        Assert.Equal(PacketKind.OtherIPv4, v.Kind);
    }

    [Theory]
    [InlineData(0, BadFrameKind.TruncatedEthernet)]
    [InlineData(13, BadFrameKind.TruncatedEthernet)]
    [InlineData(30, BadFrameKind.TruncatedIp)]
    public void Parse_Truncated_ReturnsKind(int length, BadFrameKind expected)
    {
        byte[] f = Out(1, 2, ACK, Bytes("abc"));
        Assert.False(PacketView.TryParse(f.AsSpan(0, length), out _, out BadFrameKind k));
        Assert.Equal(expected, k);
    }

    [Fact]
    public void Parse_IhlPastFrame_TcpDataOffsetPastEnd_BadOptions()
    {
        byte[] a = Out(1, 2, ACK, default);
        a[14] = 0x4F;
        Assert.False(PacketView.TryParse(a, out _, out BadFrameKind k1));
        Assert.Equal(BadFrameKind.IpHeaderLength, k1);

        byte[] b = Out(1, 2, ACK, default);
        b[46] = 0x60; // 24-byte header in a 20-byte segment
        Assert.False(PacketView.TryParse(b, out _, out BadFrameKind k2));
        Assert.Equal(BadFrameKind.TcpDataOffset, k2);

        byte[] c = Out(1, 2, ACK, default, options: new byte[] { 5, 40, 0, 0 });
        Assert.False(PacketView.TryParse(c, out _, out BadFrameKind k3));
        Assert.Equal(BadFrameKind.TcpOptions, k3);

        byte[] d = ArpReply(1, 2, padded: false).AsSpan(0, 30).ToArray();
        Assert.False(PacketView.TryParse(d, out _, out BadFrameKind k4));
        Assert.Equal(BadFrameKind.TruncatedArp, k4);
    }

    [Fact]
    public void Checksums_MatchIndependentImplementation()
    {
        var rnd = new Random(5);
        for (int i = 0; i < 200; i++)
        {
            byte[] payload = new byte[rnd.Next(0, 1500)];
            rnd.NextBytes(payload);
            byte[] f = Out((uint)rnd.Next(), (uint)rnd.Next(), ACK, payload, ipId: (ushort)i);
            Assert.True(PacketView.TryParse(f, out PacketView v, out _));
            Assert.True(Checksum.VerifyTcp(v));
            Assert.Equal(BinaryPrimitives.ReadUInt16BigEndian(f.AsSpan(24)), Checksum.IPv4Header(f.AsSpan(14, 20)));
            ushort stored = BinaryPrimitives.ReadUInt16BigEndian(f.AsSpan(50));
            f[50] = 0;
            f[51] = 0;
            Checksum.RecomputeTcp(f, v);
            Assert.Equal(stored, BinaryPrimitives.ReadUInt16BigEndian(f.AsSpan(50)));
            Assert.True(TcpChecksumValid(f));
        }
    }

    [Fact]
    public void IncrementalUpdate_EqualsFullRecompute()
    {
        var rnd = new Random(9);
        for (int i = 0; i < 500; i++)
        {
            byte[] payload = new byte[rnd.Next(0, 100)];
            rnd.NextBytes(payload);
            uint oldSeq = (uint)rnd.Next() * 2u;
            uint newSeq = (uint)rnd.Next() * 3u;
            byte[] f = Out(oldSeq, 1, ACK, payload);
            ushort ck = BinaryPrimitives.ReadUInt16BigEndian(f.AsSpan(50));
            BinaryPrimitives.WriteUInt32BigEndian(f.AsSpan(38), newSeq);
            BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(50), Checksum.Update32(ck, oldSeq, newSeq));
            Assert.True(TcpChecksumValid(f));
        }
    }
}
