using Colo.Disk;

namespace Colo.Disk.Tests;

/// <summary>An in-memory base image with injectable failures.</summary>
internal sealed class MemoryBaseImage : IBaseImage
{
    public MemoryBaseImage(int size, byte fill = 0)
    {
        Data = new byte[size];
        Array.Fill(Data, fill);
    }

    public MemoryBaseImage(byte[] data) => Data = data;

    public byte[] Data { get; }

    public long Size => Data.Length;

    public int Writes { get; private set; }

    public int Flushes { get; private set; }

    /// <summary>Fail the write (data or zeroes) with this 1-based number counted from now; writes half of it first.</summary>
    public int FailWriteAt { get; set; }

    public bool FailNextFlush { get; set; }

    /// <summary>With a random source: each write or flush fails with this probability.</summary>
    public Random? FaultRandom { get; set; }

    public double FaultRate { get; set; }

    public void Read(long offset, Span<byte> destination) => Data.AsSpan((int)offset, destination.Length).CopyTo(destination);

    public void Write(long offset, ReadOnlySpan<byte> source)
    {
        if (ShouldFail())
        {
            source[..(source.Length / 2)].CopyTo(Data.AsSpan((int)offset));
            throw new IOException("injected write failure");
        }
        source.CopyTo(Data.AsSpan((int)offset));
    }

    public void WriteZeroes(long offset, long length)
    {
        if (ShouldFail())
        {
            Data.AsSpan((int)offset, (int)(length / 2)).Clear();
            throw new IOException("injected write failure");
        }
        Data.AsSpan((int)offset, (int)length).Clear();
    }

    public void Flush()
    {
        if (FailNextFlush || (FaultRandom != null && FaultRandom.NextDouble() < FaultRate))
        {
            FailNextFlush = false;
            throw new IOException("injected flush failure");
        }
        Flushes++;
    }

    private bool ShouldFail()
    {
        Writes++;
        bool fail = FailWriteAt > 0 && --FailWriteAt == 0;
        return fail | (FaultRandom != null && FaultRandom.NextDouble() < FaultRate);
    }
}

internal static class Records
{
    public static byte[] Write(long offset, byte[] data, bool fua = false)
    {
        var buf = new byte[DiskRecordCodec.GetWriteSize(data.Length)];
        int pos = 0;
        Assert.True(DiskRecordCodec.TryWriteWrite(buf, ref pos, offset, data, fua));
        return buf;
    }

    public static byte[] Range(long offset, int length, DiskWriteFlags flags)
    {
        var buf = new byte[DiskRecordCodec.RangeRecordSize];
        int pos = 0;
        Assert.True(DiskRecordCodec.TryWriteRange(buf, ref pos, offset, length, flags));
        return buf;
    }

    public static byte[] Barrier(ulong epoch)
    {
        var buf = new byte[DiskRecordCodec.BarrierSize];
        int pos = 0;
        Assert.True(DiskRecordCodec.TryWriteBarrier(buf, ref pos, epoch));
        return buf;
    }

    public static byte[] Fill(int length, byte value)
    {
        var b = new byte[length];
        Array.Fill(b, value);
        return b;
    }

    public static void PvmWrite(this SecondaryDisk disk, long offset, byte[] data) => disk.ReceivePayload(Write(offset, data));

    public static void PvmBarrier(this SecondaryDisk disk, ulong epoch) => disk.ReceivePayload(Barrier(epoch));

    public static byte[] ReadAll(this SecondaryDisk disk, long offset, int length)
    {
        var b = new byte[length];
        disk.Read(offset, b);
        return b;
    }
}
