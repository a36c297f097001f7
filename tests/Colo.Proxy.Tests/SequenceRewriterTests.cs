using System.Buffers.Binary;
using static Colo.Proxy.Tests.Frames;

namespace Colo.Proxy.Tests;

public class SequenceRewriterTests
{
    private static uint SeqOf(byte[] f) => BinaryPrimitives.ReadUInt32BigEndian(f.AsSpan(38));
    private static uint AckOf(byte[] f) => BinaryPrimitives.ReadUInt32BigEndian(f.AsSpan(42));

    /// <summary>Client SYN, SVM SYN-ACK (ISN svmIsn), client ACK acknowledging the PVM's ISN.</summary>
    private static void Handshake(SequenceRewriter rw, uint clientIsn, uint pvmIsn, uint svmIsn)
    {
        byte[] syn = In(clientIsn, 0, SYN, default);
        byte[] synCopy = (byte[])syn.Clone();
        rw.RewriteFromClient(syn);
        Assert.Equal(synCopy, syn);
        byte[] synAck = Out(svmIsn, clientIsn + 1, SYN | ACK, default);
        byte[] synAckCopy = (byte[])synAck.Clone();
        rw.RewriteFromSvm(synAck);
        Assert.Equal(synAckCopy, synAck); // offset not known yet: SVM SYN-ACK untouched
        byte[] ack = In(clientIsn + 1, pvmIsn + 1, ACK, default);
        rw.RewriteFromClient(ack);
        Assert.Equal(svmIsn + 1, AckOf(ack));
        Assert.True(TcpChecksumValid(ack));
    }

    [Theory]
    [InlineData(1000u, 90000u, 5000u)]
    [InlineData(7u, 0xFFFFFFF0u, 0x10u)]
    [InlineData(7u, 0x10u, 0xFFFFFFF0u)]
    public void Handshake_LearnsOffset_BothDirectionsTranslated_ChecksumsValid(uint clientIsn, uint pvmIsn, uint svmIsn)
    {
        var rw = new SequenceRewriter();
        Handshake(rw, clientIsn, pvmIsn, svmIsn);
        Assert.Equal(1, rw.ConnectionCount);

        byte[] data = Out(svmIsn + 1, clientIsn + 1, ACK | PSH, Bytes("hello world"));
        rw.RewriteFromSvm(data);
        Assert.Equal(pvmIsn + 1, SeqOf(data));
        Assert.Equal(clientIsn + 1, AckOf(data));
        Assert.True(TcpChecksumValid(data));
        Assert.True(PacketView.TryParse(data, out PacketView v, out _) && Checksum.VerifyTcp(v));

        byte[] cdata = In(clientIsn + 1, pvmIsn + 12, ACK | PSH, Bytes("GET /"));
        rw.RewriteFromClient(cdata);
        Assert.Equal(svmIsn + 12, AckOf(cdata));
        Assert.Equal(clientIsn + 1, SeqOf(cdata));
        Assert.True(TcpChecksumValid(cdata));
    }

    [Fact]
    public void Sack_BlocksRewritten_ChecksumValid()
    {
        var rw = new SequenceRewriter();
        Handshake(rw, 100, 50000, 2000);
        uint off = 48000;
        byte[] opts = new byte[20];
        opts[0] = 1;
        opts[1] = 1;
        opts[2] = 5;
        opts[3] = 18;
        BinaryPrimitives.WriteUInt32BigEndian(opts.AsSpan(4), 50100);
        BinaryPrimitives.WriteUInt32BigEndian(opts.AsSpan(8), 50200);
        BinaryPrimitives.WriteUInt32BigEndian(opts.AsSpan(12), 50300);
        BinaryPrimitives.WriteUInt32BigEndian(opts.AsSpan(16), 50400);
        byte[] f = In(101, 50001, ACK, default, opts);
        rw.RewriteFromClient(f);
        Assert.True(PacketView.TryParse(f, out PacketView v, out _));
        Assert.Equal(2, v.SackBlockCount);
        Assert.Equal(50100 - off, BinaryPrimitives.ReadUInt32BigEndian(f.AsSpan(v.SackOffset)));
        Assert.Equal(50200 - off, BinaryPrimitives.ReadUInt32BigEndian(f.AsSpan(v.SackOffset + 4)));
        Assert.Equal(50300 - off, BinaryPrimitives.ReadUInt32BigEndian(f.AsSpan(v.SackOffset + 8)));
        Assert.Equal(50400 - off, BinaryPrimitives.ReadUInt32BigEndian(f.AsSpan(v.SackOffset + 12)));
        Assert.Equal(50001 - off, v.AckNumber);
        Assert.True(TcpChecksumValid(f));
    }

    [Fact]
    public void GuestInitiated_OffsetLearnedFromClientSynAck()
    {
        var rw = new SequenceRewriter();
        byte[] svmSyn = Out(3000, 0, SYN, default);
        rw.RewriteFromSvm(svmSyn);
        Assert.Equal(3000u, SeqOf(svmSyn));
        byte[] clientSynAck = In(700, 10001, SYN | ACK, default); // the client answered the PVM's SYN (ISN 10000)
        rw.RewriteFromClient(clientSynAck);
        Assert.Equal(3001u, AckOf(clientSynAck));
        byte[] d = Out(3001, 701, ACK, Bytes("x"));
        rw.RewriteFromSvm(d);
        Assert.Equal(10001u, SeqOf(d));
        Assert.True(TcpChecksumValid(d));
    }

    [Fact]
    public void ResetAfterCheckpoint_OffsetsZero_FramesUntouched()
    {
        var rw = new SequenceRewriter();
        Handshake(rw, 1000, 90000, 5000);
        rw.ResetAfterCheckpoint();
        Assert.Equal(0, rw.ConnectionCount);
        byte[] d = Out(90001, 1001, ACK, Bytes("after"));
        byte[] copy = (byte[])d.Clone();
        rw.RewriteFromSvm(d);
        Assert.Equal(copy, d);
        byte[] c = In(1001, 90006, ACK, default);
        byte[] ccopy = (byte[])c.Clone();
        rw.RewriteFromClient(c);
        Assert.Equal(ccopy, c);
    }

    [Fact]
    public void LearnOffsetsFalse_AfterFailover_NewConnectionsUntouched_ExistingKeepTranslating()
    {
        var rw = new SequenceRewriter();
        Handshake(rw, 1000, 90000, 5000);
        rw.LearnOffsets = false;

        byte[] old = Out(5001, 1001, ACK, Bytes("old"));
        rw.RewriteFromSvm(old);
        Assert.Equal(90001u, SeqOf(old));

        // New connection after failover: the client talks to the SVM directly.
        byte[] synAck = Tcp(GuestIp, GuestPort, ClientIp, 40001, 7000, 301, SYN | ACK, default);
        rw.RewriteFromSvm(synAck);
        byte[] ack = Tcp(ClientIp, 40001, GuestIp, GuestPort, 301, 7001, ACK, default);
        byte[] ackCopy = (byte[])ack.Clone();
        rw.RewriteFromClient(ack);
        Assert.Equal(ackCopy, ack);
        byte[] d = Tcp(GuestIp, GuestPort, ClientIp, 40001, 7001, 301, ACK, Bytes("new"));
        byte[] dCopy = (byte[])d.Clone();
        rw.RewriteFromSvm(d);
        Assert.Equal(dCopy, d);
        Assert.Equal(1, rw.ConnectionCount);
    }

    [Fact]
    public void LearnOffsetsFalse_HandshakeInProgressAtFailover_StillLearnsFromClientAck()
    {
        var rw = new SequenceRewriter();
        // The SVM answered the SYN before failover (ISN 7000); the client saw the PVM's SYN-ACK (ISN 95000).
        byte[] synAck = Tcp(GuestIp, GuestPort, ClientIp, 40002, 7000, 301, SYN | ACK, default);
        rw.RewriteFromSvm(synAck);
        rw.LearnOffsets = false;
        byte[] ack = Tcp(ClientIp, 40002, GuestIp, GuestPort, 301, 95001, ACK, Bytes("GET"));
        rw.RewriteFromClient(ack);
        Assert.Equal(7001u, AckOf(ack));
        byte[] reply = Tcp(GuestIp, GuestPort, ClientIp, 40002, 7001, 304, ACK, Bytes("200"));
        rw.RewriteFromSvm(reply);
        Assert.Equal(95001u, SeqOf(reply));
    }

    [Fact]
    public void MalformedAndNonTcp_PassedThroughUntouched()
    {
        var rw = new SequenceRewriter();
        Handshake(rw, 1000, 90000, 5000);
        byte[] bad = Out(5001, 1001, ACK, Bytes("x"));
        bad[14] = 0x4F;
        byte[] copy = (byte[])bad.Clone();
        rw.RewriteFromSvm(bad);
        Assert.Equal(copy, bad);
        byte[] tiny = new byte[5];
        rw.RewriteFromClient(tiny);
        byte[] udp = Udp(GuestIp, 80, ClientIp, 40000, Bytes("u"));
        byte[] ucopy = (byte[])udp.Clone();
        rw.RewriteFromSvm(udp);
        Assert.Equal(ucopy, udp);
    }

    [Fact]
    public void Table_Bounded_ClosedEvictedFirst()
    {
        var rw = new SequenceRewriter(maxConnections: 3);
        for (ushort p = 1; p <= 10; p++)
        {
            rw.RewriteFromSvm(Tcp(GuestIp, GuestPort, ClientIp, p, 7000, 301, SYN | ACK, default));
        }
        Assert.Equal(3, rw.ConnectionCount);
    }

    [Fact]
    public void Entries_ExpireAfterFinBothWaysAndIdle()
    {
        var time = new FakeTime();
        var rw = new SequenceRewriter(time, closedIdle: TimeSpan.FromSeconds(5));
        Handshake(rw, 1000, 90000, 5000);
        rw.RewriteFromSvm(Out(5001, 1001, ACK | FIN, default));
        rw.RewriteFromClient(In(1001, 90002, ACK | FIN, default));
        time.Advance(TimeSpan.FromSeconds(4));
        rw.Expire();
        Assert.Equal(1, rw.ConnectionCount);
        time.Advance(TimeSpan.FromSeconds(2));
        rw.Expire();
        Assert.Equal(0, rw.ConnectionCount);
    }
}
