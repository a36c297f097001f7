using System.Buffers.Binary;
using static Colo.Proxy.Tests.Frames;

namespace Colo.Proxy.Tests;

/// <summary>
/// What the client sees on the wire across a checkpoint and across a failover: the compare engine (primary) and the
/// sequence rewriter (secondary) together, with a PVM and an SVM that chose different initial sequence numbers
/// (issue 4, "a connection opened before a checkpoint and used after it, and a failover in the middle of a
/// connection: sequence numbers the client sees are continuous").
/// </summary>
public class WireContinuityTests
{
    private const uint ClientIsn = 1000, PvmIsn = 90000, SvmIsn = 5000;

    private static uint SeqOf(byte[] f) => BinaryPrimitives.ReadUInt32BigEndian(f.AsSpan(38));

    /// <summary>The PVM, the SVM (behind its rewriter) and the client's view of the connection.</summary>
    private sealed class Pair
    {
        public readonly Harness Primary = new();
        public readonly SequenceRewriter Rewriter = new();
        public readonly List<byte[]> Wire = new();
        public uint PvmNext = PvmIsn + 1, SvmNext = SvmIsn + 1, ClientNext = ClientIsn + 1;
        public bool FailedOver;

        /// <summary>Client frame to the PVM and (rewritten) to the SVM.</summary>
        public void FromClient(byte[] frame)
        {
            if (!FailedOver)
                Primary.Pvm((byte[])frame.Clone()); // the PVM receives it as sent (input to the PVM is not compared)
            Rewriter.RewriteFromClient(frame);
        }

        /// <summary>Both VMs answer with <paramref name="data"/> (each in its own sequence space).</summary>
        public void ServerSends(string data)
        {
            byte[] payload = Bytes(data);
            byte[] svm = Out(SvmNext, ClientNext, ACK | PSH, payload);
            SvmNext += (uint)payload.Length;
            Rewriter.RewriteFromSvm(svm);
            if (FailedOver)
            {
                Wire.Add(svm); // the failed-over secondary's output goes straight to the client
                return;
            }
            byte[] pvm = Out(PvmNext, ClientNext, ACK | PSH, payload);
            PvmNext += (uint)payload.Length;
            int before = Primary.Sink.Released.Count;
            Primary.Svm(svm);
            Primary.Pvm(pvm);
            Wire.AddRange(Primary.Sink.Released.Skip(before));
        }

        public void Handshake()
        {
            var h = Primary;
            Rewriter.RewriteFromClient(In(ClientIsn, 0, SYN, default));
            byte[] svmSynAck = Out(SvmIsn, ClientIsn + 1, SYN | ACK, default);
            Rewriter.RewriteFromSvm(svmSynAck);
            h.Svm(svmSynAck);
            h.Pvm(Out(PvmIsn, ClientIsn + 1, SYN | ACK, default));
            Wire.AddRange(h.Sink.Released);
            // The client acknowledges the SYN-ACK it saw (the PVM's); the rewriter learns the offset from it.
            Rewriter.RewriteFromClient(In(ClientIsn + 1, PvmIsn + 1, ACK, default));
        }

        /// <summary>The secondary loads a checkpoint: the SVM now has the PVM's TCP state (its sequence numbers).</summary>
        public void Checkpoint()
        {
            Primary.Engine.OnCheckpointCommitted();
            Rewriter.ResetAfterCheckpoint();
            SvmNext = PvmNext;
        }

        public void Failover()
        {
            FailedOver = true;
            Rewriter.LearnOffsets = false;
        }

        /// <summary>Every segment the client saw starts where the previous one ended (SYN counts one).</summary>
        public void AssertContinuous(int expectedSegments)
        {
            Assert.Equal(expectedSegments, Wire.Count);
            uint expected = PvmIsn;
            foreach (byte[] f in Wire)
            {
                Assert.Equal(expected, SeqOf(f));
                Assert.True(TcpChecksumValid(f), "bad TCP checksum on the wire");
                int payload = f.Length - 54;
                bool syn = (f[47] & SYN) != 0;
                expected += (uint)payload + (syn ? 1u : 0u);
            }
        }
    }

    [Fact]
    public void ConnectionUsedAcrossACheckpoint_ThenFailover_ClientSeesContinuousSequenceNumbers()
    {
        var p = new Pair();
        p.Handshake();
        p.ServerSends("hello ");
        p.Checkpoint();
        p.ServerSends("after checkpoint ");
        p.Checkpoint();
        p.ServerSends("twice ");
        p.Failover();
        p.ServerSends("served by the SVM");
        p.AssertContinuous(5);
        Assert.Empty(p.Primary.Sink.Requests);
    }

    [Fact]
    public void FailoverWithoutACheckpointSinceTheHandshake_RewriterKeepsTranslating()
    {
        var p = new Pair();
        p.Handshake();
        p.ServerSends("abc");
        p.ServerSends("defgh");
        p.Failover();
        p.ServerSends("from the SVM, still offset");
        p.ServerSends("and more");
        p.AssertContinuous(5);
        // The client's ACKs are translated into the SVM's space after failover too.
        byte[] ack = In(p.ClientNext, p.PvmNext + 8 + 26, ACK, default);
        p.FromClient(ack);
        Assert.Equal(p.SvmNext, BinaryPrimitives.ReadUInt32BigEndian(ack.AsSpan(42)));
    }
}
