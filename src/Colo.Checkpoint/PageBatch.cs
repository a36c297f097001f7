using System.Buffers;
using System.Buffers.Binary;

namespace Colo.Checkpoint;

/// <summary>
/// Wire format of a batch of guest pages inside one <c>CheckpointPages</c> link message:
/// a sequence of records, each a 4-byte big-endian page index followed by the page's 4096 bytes.
/// </summary>
public static class PageBatch
{
    /// <summary>Bytes one page record takes: 4 (index) + 4096 (page).</summary>
    public const int RecordSize = 4 + GuestRam.PageSize;

    /// <summary>Pages per batch used by the checkpoint sender (4 MiB of page data).</summary>
    public const int PagesPerBatch = 1024;

    /// <summary>Writes one record at the start of <paramref name="destination"/>.</summary>
    /// <returns>Bytes written (<see cref="RecordSize"/>).</returns>
    public static int WriteRecord(Span<byte> destination, int pageIndex, ReadOnlySpan<byte> page)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, (uint)pageIndex);
        page[..GuestRam.PageSize].CopyTo(destination[4..]);
        return RecordSize;
    }

    /// <summary>
    /// Applies every record of <paramref name="payload"/> by calling <paramref name="apply"/> with
    /// the page index and its bytes.
    /// </summary>
    /// <returns>The number of pages in the batch.</returns>
    /// <exception cref="InvalidDataException">The payload is not a whole number of records or an index is past <paramref name="pageCount"/>.</exception>
    public static int Read<TState>(ReadOnlySequence<byte> payload, int pageCount, TState state, PageAction<TState> apply)
    {
        if (payload.Length % RecordSize != 0)
            throw new InvalidDataException($"page batch of {payload.Length} bytes is not a whole number of {RecordSize}-byte records");
        int n = 0;
        byte[]? rented = null;
        var reader = new SequenceReader<byte>(payload);
        try
        {
            while (!reader.End)
            {
                ReadOnlySpan<byte> rec;
                if (reader.UnreadSpan.Length >= RecordSize)
                {
                    rec = reader.UnreadSpan[..RecordSize];
                }
                else
                {
                    rented ??= ArrayPool<byte>.Shared.Rent(RecordSize);
                    reader.TryCopyTo(rented.AsSpan(0, RecordSize));
                    rec = rented.AsSpan(0, RecordSize);
                }
                uint index = BinaryPrimitives.ReadUInt32BigEndian(rec);
                if (index >= (uint)pageCount)
                    throw new InvalidDataException($"page index {index} is past the guest's {pageCount} pages");
                apply(state, (int)index, rec[4..]);
                reader.Advance(RecordSize);
                n++;
            }
        }
        finally
        {
            if (rented != null)
                ArrayPool<byte>.Shared.Return(rented);
        }
        return n;
    }
}

/// <summary>Receives one page of a <see cref="PageBatch"/>.</summary>
public delegate void PageAction<in TState>(TState state, int pageIndex, ReadOnlySpan<byte> page);
