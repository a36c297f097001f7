using System.Buffers.Binary;
using System.Text;
using Colo.Disk;
using Colo.Disk.Internal;

namespace Colo.Disk.Tests;

public sealed class DiskRecordCodecTests
{
    [Fact]
    public void Crc32C_CheckValue_MatchesCastagnoli()
    {
        Assert.Equal(0xE3069283u, Crc32C.Compute(Encoding.ASCII.GetBytes("123456789")));
    }

    [Fact]
    public void Crc32C_Intrinsics_MatchTable()
    {
        var rnd = new Random(7);
        for (int len = 0; len < 100; len++)
        {
            var data = new byte[len];
            rnd.NextBytes(data);
            Assert.Equal(~Crc32C.UpdateTable(0xFFFFFFFFu, data), Crc32C.Compute(data));
        }
    }

    [Fact]
    public void RoundTrip_WriteRangeAndBarrier_AllFieldsAndPositions()
    {
        var data = new byte[777];
        new Random(1).NextBytes(data);
        var buf = new byte[4096];
        int pos = 0;
        Assert.True(DiskRecordCodec.TryWriteWrite(buf, ref pos, 123_456_789_012, data, fua: true));
        Assert.Equal(DiskRecordCodec.GetWriteSize(777), pos);
        Assert.True(DiskRecordCodec.TryWriteRange(buf, ref pos, 4096, 65536, DiskWriteFlags.Zero | DiskWriteFlags.NoHole));
        Assert.True(DiskRecordCodec.TryWriteRange(buf, ref pos, 0, 512, DiskWriteFlags.Trim));
        Assert.True(DiskRecordCodec.TryWriteBarrier(buf, ref pos, 42));
        int end = pos;

        pos = 0;
        Assert.True(DiskRecordCodec.TryRead(buf.AsSpan(0, end), ref pos, out DiskRecord r));
        Assert.Equal(DiskRecordKind.Write, r.Kind);
        Assert.Equal(DiskWriteFlags.Fua, r.Flags);
        Assert.Equal(123_456_789_012, r.Offset);
        Assert.Equal(777, r.Length);
        Assert.True(r.Data.SequenceEqual(data));
        Assert.False(r.IsZeroRange);

        Assert.True(DiskRecordCodec.TryRead(buf.AsSpan(0, end), ref pos, out r));
        Assert.Equal(DiskWriteFlags.Zero | DiskWriteFlags.NoHole, r.Flags);
        Assert.Equal(4096, r.Offset);
        Assert.Equal(65536, r.Length);
        Assert.True(r.Data.IsEmpty);
        Assert.True(r.IsZeroRange);

        Assert.True(DiskRecordCodec.TryRead(buf.AsSpan(0, end), ref pos, out r));
        Assert.Equal(DiskWriteFlags.Trim, r.Flags);
        Assert.Equal(512, r.Length);

        Assert.True(DiskRecordCodec.TryRead(buf.AsSpan(0, end), ref pos, out r));
        Assert.Equal(DiskRecordKind.Barrier, r.Kind);
        Assert.Equal(42ul, r.Epoch);
        Assert.Equal(end, pos);
        Assert.False(DiskRecordCodec.TryRead(buf.AsSpan(0, end), ref pos, out _));
        Assert.Equal(end, pos);
    }

    [Fact]
    public void TryRead_SplitAtEveryByte_NeedsMoreUntilWholeThenSucceeds()
    {
        byte[] rec = Records.Write(8192, Records.Fill(100, 0xAB));
        for (int cut = 0; cut < rec.Length; cut++)
        {
            int pos = 0;
            Assert.False(DiskRecordCodec.TryRead(rec.AsSpan(0, cut), ref pos, out DiskRecord r));
            Assert.Equal(0, pos);
            Assert.Equal(default(DiskRecordKind), r.Kind);
        }
        int p = 0;
        Assert.True(DiskRecordCodec.TryRead(rec, ref p, out _));
        Assert.Equal(rec.Length, p);
    }

    [Fact]
    public void TryRead_TwoRecordsAcrossTwoReceiveBuffers_DecodesBothAfterJoining()
    {
        byte[] stream = [.. Records.Write(0, Records.Fill(50, 1)), .. Records.Barrier(3)];
        byte[] first = stream[..60];
        int pos = 0;
        Assert.False(DiskRecordCodec.TryRead(first, ref pos, out _));
        // The transport appends the rest and retries from the same position.
        Assert.True(DiskRecordCodec.TryRead(stream, ref pos, out DiskRecord r));
        Assert.Equal(50, r.Length);
        Assert.True(DiskRecordCodec.TryRead(stream, ref pos, out r));
        Assert.Equal(3ul, r.Epoch);
    }

    [Theory]
    [InlineData(16)] // a data byte
    [InlineData(4)] // the offset
    [InlineData(-1)] // the CRC itself
    public void TryRead_CorruptByte_ThrowsCrcMismatch(int index)
    {
        byte[] rec = Records.Write(4096, Records.Fill(64, 7));
        rec[index < 0 ? rec.Length + index : index] ^= 0x10;
        int pos = 0;
        var e = Assert.Throws<InvalidDataException>(() => DiskRecordCodec.TryRead(rec, ref pos, out _));
        Assert.Contains("CRC", e.Message);
        Assert.Equal(0, pos);
    }

    [Fact]
    public void TryRead_OversizedWriteHeader_ThrowsWithoutWaitingForData()
    {
        byte[] header = Records.Write(0, [1])[..DiskRecordCodec.HeaderSize];
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(12), DiskRecordCodec.MaxDataLength + 1);
        int pos = 0;
        Assert.Throws<InvalidDataException>(() => DiskRecordCodec.TryRead(header, ref pos, out _));
        Assert.Equal(0, pos);
    }

    public static TheoryData<string, int, byte> MalformedHeaders => new()
    {
        { "version", 0, 2 },
        { "kind", 1, 9 },
        { "flags unknown", 2, 0x40 },
        { "zero and trim", 2, (byte)(DiskWriteFlags.Zero | DiskWriteFlags.Trim) },
        { "nohole without zero", 2, (byte)DiskWriteFlags.NoHole },
        { "reserved", 3, 1 },
    };

    [Theory]
    [MemberData(nameof(MalformedHeaders))]
    public void TryRead_MalformedHeader_Throws(string what, int index, byte value)
    {
        Assert.NotNull(what);
        byte[] rec = Records.Write(0, Records.Fill(8, 1));
        rec[index] = value;
        int pos = 0;
        Assert.Throws<InvalidDataException>(() => DiskRecordCodec.TryRead(rec, ref pos, out _));
    }

    [Fact]
    public void TryRead_ZeroLengthWrite_Throws()
    {
        byte[] rec = Records.Range(0, 4096, DiskWriteFlags.Zero);
        BinaryPrimitives.WriteUInt32BigEndian(rec.AsSpan(12), 0);
        int pos = 0;
        Assert.Throws<InvalidDataException>(() => DiskRecordCodec.TryRead(rec, ref pos, out _));
    }

    [Fact]
    public void TryRead_OffsetOverflow_Throws()
    {
        byte[] rec = Records.Range(0, 4096, DiskWriteFlags.Zero);
        BinaryPrimitives.WriteUInt64BigEndian(rec.AsSpan(4), ulong.MaxValue - 10);
        int pos = 0;
        Assert.Throws<InvalidDataException>(() => DiskRecordCodec.TryRead(rec, ref pos, out _));
    }

    [Fact]
    public void TryRead_BarrierEpochZeroOrWithLength_Throws()
    {
        byte[] rec = Records.Barrier(5);
        BinaryPrimitives.WriteUInt64BigEndian(rec.AsSpan(4), 0);
        int pos = 0;
        Assert.Throws<InvalidDataException>(() => DiskRecordCodec.TryRead(rec, ref pos, out _));
        rec = Records.Barrier(5);
        BinaryPrimitives.WriteUInt32BigEndian(rec.AsSpan(12), 1);
        Assert.Throws<InvalidDataException>(() => DiskRecordCodec.TryRead(rec, ref pos, out _));
    }

    [Fact]
    public void TryWrite_NoRoom_ReturnsFalsePositionUnchanged()
    {
        var buf = new byte[30];
        int pos = 5;
        Assert.False(DiskRecordCodec.TryWriteWrite(buf, ref pos, 0, new byte[10], false));
        Assert.Equal(5, pos);
        pos = 11;
        Assert.False(DiskRecordCodec.TryWriteBarrier(buf, ref pos, 1));
        Assert.Equal(11, pos);
        pos = 10;
        Assert.True(DiskRecordCodec.TryWriteBarrier(buf, ref pos, 1));
        Assert.Equal(30, pos);
    }

    [Fact]
    public void TryWrite_BadArguments_Throw()
    {
        var buf = new byte[64];
        int pos = 0;
        Assert.Throws<ArgumentOutOfRangeException>(() => DiskRecordCodec.TryWriteWrite(buf, ref pos, 0, ReadOnlySpan<byte>.Empty, false));
        Assert.Throws<ArgumentOutOfRangeException>(() => DiskRecordCodec.TryWriteWrite(buf, ref pos, 0, new byte[DiskRecordCodec.MaxDataLength + 1], false));
        Assert.Throws<ArgumentOutOfRangeException>(() => DiskRecordCodec.TryWriteWrite(buf, ref pos, -1, new byte[1], false));
        Assert.Throws<ArgumentOutOfRangeException>(() => DiskRecordCodec.TryWriteRange(buf, ref pos, 0, 10, DiskWriteFlags.Fua));
        Assert.Throws<ArgumentOutOfRangeException>(() => DiskRecordCodec.TryWriteRange(buf, ref pos, 0, 0, DiskWriteFlags.Zero));
        Assert.Throws<ArgumentOutOfRangeException>(() => DiskRecordCodec.TryWriteBarrier(buf, ref pos, 0));
        pos = 65;
        Assert.Throws<ArgumentOutOfRangeException>(() => DiskRecordCodec.TryWriteBarrier(buf, ref pos, 1));
    }
}
