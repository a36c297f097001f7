using System.Buffers.Binary;
using static Colo.Proxy.Tests.Frames;

namespace Colo.Proxy.Tests;

/// <summary>Inputs the fuzzer found (fuzz/crashes), as small cases with the right result asserted.</summary>
public class FuzzRegressionTests
{
    [Fact]
    public void PvmDataPastTheSvmsFin_Mismatch_NoInternalError()
    {
        var h = new Harness();
        h.Svm(Out(100, 5000, ACK | FIN, Bytes("abcde")));
        h.Pvm(Out(100, 5000, ACK, Bytes("abcde")));   // same bytes, no FIN: the SVM is ahead by its FIN alone
        h.Pvm(Out(105, 5000, ACK, Bytes("more")));    // data where the SVM ended the stream
        Assert.Equal(0, h.Engine.Counters.InternalErrors);
        Assert.Contains(CheckpointReason.Mismatch, h.Sink.Requests);
    }

    [Fact]
    public void SvmDataPastThePvmsFin_Mismatch_NoInternalError()
    {
        var h = new Harness();
        h.Pvm(Out(100, 5000, ACK | FIN, Bytes("abcde")));
        h.Svm(Out(100, 5000, ACK, Bytes("abcde")));
        h.Svm(Out(105, 5000, ACK, Bytes("more")));
        Assert.Equal(0, h.Engine.Counters.InternalErrors);
        Assert.Contains(CheckpointReason.Mismatch, h.Sink.Requests);
    }

    [Fact]
    public void Rewriter_SackAfterASingleNop_NotWordAligned_ChecksumStillValid()
    {
        const uint clientIsn = 1000, pvmIsn = 90000, svmIsn = 5000, off = pvmIsn - svmIsn;
        var rw = new SequenceRewriter();
        rw.RewriteFromClient(In(clientIsn, 0, SYN, default));
        rw.RewriteFromSvm(Out(svmIsn, clientIsn + 1, SYN | ACK, default));
        rw.RewriteFromClient(In(clientIsn + 1, pvmIsn + 1, ACK, default));
        // Options: NOP, then SACK (kind 5, length 10) with one block: the block starts at an odd offset in the header.
        var options = new byte[11];
        options[0] = 1;
        options[1] = 5;
        options[2] = 10;
        BinaryPrimitives.WriteUInt32BigEndian(options.AsSpan(3), pvmIsn + 101);
        BinaryPrimitives.WriteUInt32BigEndian(options.AsSpan(7), pvmIsn + 201);
        byte[] ack = In(clientIsn + 1, pvmIsn + 1, ACK, default, options);
        Assert.True(TcpChecksumValid(ack));
        rw.RewriteFromClient(ack);
        Assert.True(TcpChecksumValid(ack), "checksum broken by the rewrite");
        Assert.Equal(svmIsn + 1, BinaryPrimitives.ReadUInt32BigEndian(ack.AsSpan(42)));
        Assert.True(PacketView.TryParse(ack, out PacketView v, out _));
        Assert.Equal(1, v.SackBlockCount);
        Assert.Equal(pvmIsn + 101 - off, BinaryPrimitives.ReadUInt32BigEndian(ack.AsSpan(v.SackOffset)));
    }
}
