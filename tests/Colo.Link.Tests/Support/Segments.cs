using System.Buffers;

namespace Colo.Link.Tests.Support;

/// <summary>Builds multi-segment <see cref="ReadOnlySequence{T}"/>s for parser tests.</summary>
internal static class Segments
{
    /// <summary>Splits <paramref name="data"/> into segments of <paramref name="segmentSize"/> bytes (last one shorter).</summary>
    public static ReadOnlySequence<byte> Split(byte[] data, int segmentSize)
    {
        var chunks = new List<ReadOnlyMemory<byte>>();
        for (int i = 0; i < data.Length; i += segmentSize)
        {
            chunks.Add(data.AsMemory(i, Math.Min(segmentSize, data.Length - i)));
        }

        return FromChunks(chunks);
    }

    /// <summary>Splits <paramref name="data"/> at the given offsets.</summary>
    public static ReadOnlySequence<byte> SplitAt(byte[] data, params int[] offsets)
    {
        var chunks = new List<ReadOnlyMemory<byte>>();
        int start = 0;
        foreach (int offset in offsets)
        {
            chunks.Add(data.AsMemory(start, offset - start));
            start = offset;
        }

        chunks.Add(data.AsMemory(start));
        return FromChunks(chunks);
    }

    private static ReadOnlySequence<byte> FromChunks(List<ReadOnlyMemory<byte>> chunks)
    {
        if (chunks.Count == 0)
        {
            return ReadOnlySequence<byte>.Empty;
        }

        var first = new Segment(chunks[0], 0);
        Segment last = first;
        for (int i = 1; i < chunks.Count; i++)
        {
            last = last.Append(chunks[i]);
        }

        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory, RunningIndex + Memory.Length);
            Next = next;
            return next;
        }
    }
}
