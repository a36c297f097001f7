using System.Buffers.Binary;
using BenchmarkDotNet.Attributes;

namespace Colo.Proxy.Bench;

/// <summary>An <see cref="ICompareSink"/> that only counts (no copy of the released frame).</summary>
public sealed class CountingSink : ICompareSink
{
    /// <summary>Frames released.</summary>
    public long Released;
    /// <summary>Checkpoint requests received (0 in a valid run).</summary>
    public long Checkpoints;

    /// <inheritdoc/>
    public void Release(ReadOnlySpan<byte> frame) => Released++;

    /// <inheritdoc/>
    public void RequestCheckpoint(CheckpointReason reason) => Checkpoints++;
}

/// <summary>
/// Matched TCP through <see cref="CompareEngine"/> on one thread: each operation is one PVM frame (held: the engine
/// copies it into a pooled buffer) followed by the SVM's identical frame (different IPv4 id and TTL), which matches
/// it and releases it to a counting sink. One connection; the sequence number advances by the payload each pair
/// (patched in place in the two pre-built frames: the engine never validates checksums, which it ignores).
/// </summary>
[MemoryDiagnoser]
public class MatchedTcpBenchmarks
{
    /// <summary>PVM+SVM pairs per invocation.</summary>
    public const int Batch = 10_000;

    private CompareEngine _engine = null!;
    private CountingSink _sink = null!;
    private byte[] _pvm = null!;
    private byte[] _svm = null!;
    private uint _seq;

    /// <summary>TCP payload bytes per frame.</summary>
    [Params(64, 1460)]
    public int Payload { get; set; }

    /// <summary>Builds the engine and frames and checks that pairs really match and release.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _sink = new CountingSink();
        _engine = new CompareEngine(new CompareOptions(), _sink, TimeProvider.System) { PassThrough = false };
        byte[] payload = BenchFrames.Payload(Payload);
        _seq = 0x1000_0000;
        _pvm = BenchFrames.Tcp(true, _seq, 0x2000_0001, BenchFrames.Ack | BenchFrames.Psh, payload, ipId: 100, ttl: 64);
        _svm = BenchFrames.Tcp(true, _seq, 0x2000_0001, BenchFrames.Ack | BenchFrames.Psh, payload, ipId: 7000, ttl: 63);
        MatchedPair();
        CompareCounters c = _engine.Counters;
        if (_sink.Released != Batch || c.MatchedFrames != Batch || c.HeldFrames != 0 || c.Mismatches != 0 ||
            _sink.Checkpoints != 0 || c.InternalErrors != 0 || c.PvmBadFrames + c.SvmBadFrames != 0)
        {
            throw new InvalidOperationException(
                $"engine did not match every pair: released {_sink.Released}/{Batch}, matched {c.MatchedFrames}, held {c.HeldFrames}, " +
                $"mismatches {c.Mismatches}, checkpoint requests {_sink.Checkpoints}, errors {c.InternalErrors}");
        }
    }

    /// <summary><see cref="Batch"/> matched pairs: OnPvmFrame then OnSvmFrame, sequence advancing.</summary>
    /// <returns>Frames released so far.</returns>
    [Benchmark(OperationsPerInvoke = Batch)]
    public long MatchedPair()
    {
        CompareEngine engine = _engine;
        byte[] pvm = _pvm, svm = _svm;
        uint seq = _seq, step = (uint)Payload;
        for (int i = 0; i < Batch; i++)
        {
            BinaryPrimitives.WriteUInt32BigEndian(pvm.AsSpan(BenchFrames.SeqOffset), seq);
            BinaryPrimitives.WriteUInt32BigEndian(svm.AsSpan(BenchFrames.SeqOffset), seq);
            engine.OnPvmFrame(pvm);
            engine.OnSvmFrame(svm);
            seq += step;
        }
        _seq = seq;
        return _sink.Released;
    }

    /// <summary>Checks that nothing stayed held.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        CompareCounters c = _engine.Counters;
        if (c.HeldFrames != 0 || c.Mismatches != 0 || _sink.Checkpoints != 0 || _sink.Released != c.PvmFrames)
        {
            Console.WriteLine($"// WARNING MatchedTcp({Payload}): released {_sink.Released} of {c.PvmFrames}, held {c.HeldFrames}, mismatches {c.Mismatches}, checkpoints {_sink.Checkpoints}");
        }
    }
}

/// <summary>
/// <see cref="SequenceRewriter"/> on one connection with a non-zero offset (learned from a handshake in setup):
/// each operation rewrites one SVM → client frame (sequence number + offset, checksum fixed incrementally) and one
/// client → SVM frame (acknowledgement − offset), in place.
/// </summary>
[MemoryDiagnoser]
public class RewriterBenchmarks
{
    /// <summary>Operations (2 frames each) per invocation.</summary>
    public const int Batch = 10_000;

    private SequenceRewriter _rewriter = null!;
    private byte[] _fromSvm = null!;
    private byte[] _fromClient = null!;
    private long _rewrittenAtSetup;
    private long _operations;

    /// <summary>TCP payload bytes per frame.</summary>
    [Params(64, 1460)]
    public int Payload { get; set; }

    /// <summary>Learns the offset from a handshake and checks one rewrite of each direction.</summary>
    [GlobalSetup]
    public void Setup()
    {
        const uint svmIsn = 0x5000_0000, pvmIsn = 0x1000_0000, clientIsn = 0x2000_0000;
        _rewriter = new SequenceRewriter(TimeProvider.System);
        _rewriter.RewriteFromSvm(BenchFrames.Tcp(true, svmIsn, clientIsn + 1, BenchFrames.Syn | BenchFrames.Ack, default));
        _rewriter.RewriteFromClient(BenchFrames.Tcp(false, clientIsn + 1, pvmIsn + 1, BenchFrames.Ack, default));
        byte[] payload = BenchFrames.Payload(Payload);
        _fromSvm = BenchFrames.Tcp(true, svmIsn + 1, clientIsn + 1, BenchFrames.Ack | BenchFrames.Psh, payload);
        _fromClient = BenchFrames.Tcp(false, clientIsn + 1, pvmIsn + 1, BenchFrames.Ack | BenchFrames.Psh, payload);
        _rewriter.RewriteFromSvm(_fromSvm);
        _rewriter.RewriteFromClient(_fromClient);
        uint seq = BinaryPrimitives.ReadUInt32BigEndian(_fromSvm.AsSpan(BenchFrames.SeqOffset));
        uint ack = BinaryPrimitives.ReadUInt32BigEndian(_fromClient.AsSpan(BenchFrames.AckOffset));
        if (seq != pvmIsn + 1 || ack != svmIsn + 1 || !BenchFrames.ChecksumsValid(_fromSvm) || !BenchFrames.ChecksumsValid(_fromClient))
        {
            throw new InvalidOperationException($"rewriter did not translate: seq {seq:x8}, ack {ack:x8}");
        }
        _rewrittenAtSetup = _rewriter.RewrittenFrames;
        _operations = 0;
    }

    /// <summary><see cref="Batch"/> × (RewriteFromSvm + RewriteFromClient).</summary>
    /// <returns>Frames rewritten so far.</returns>
    [Benchmark(OperationsPerInvoke = Batch)]
    public long RewriteBothDirections()
    {
        SequenceRewriter r = _rewriter;
        byte[] s = _fromSvm, c = _fromClient;
        for (int i = 0; i < Batch; i++)
        {
            r.RewriteFromSvm(s);
            r.RewriteFromClient(c);
        }
        _operations += Batch;
        return r.RewrittenFrames;
    }

    /// <summary>Checks that every frame was rewritten and checksums still verify.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        bool checksums = BenchFrames.ChecksumsValid(_fromSvm) && BenchFrames.ChecksumsValid(_fromClient);
        long rewritten = _rewriter.RewrittenFrames - _rewrittenAtSetup;
        if (!checksums || rewritten != 2 * _operations)
        {
            Console.WriteLine($"// WARNING Rewriter({Payload}): checksums verify: {checksums}; frames rewritten {rewritten} of {2 * _operations}");
        }
    }
}
