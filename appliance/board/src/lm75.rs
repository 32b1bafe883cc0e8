//! A driver for the LM75 family of I²C temperature sensors (LM75A, LM75B, and compatibles such
//! as the NXP/TI/ST parts), written against the embedded-hal 1.0 [`I2c`] trait.
//!
//! Registers (datasheet): pointer `0x00` temperature (16 bits, MSB first, left-justified
//! two's complement: 9 significant bits on the LM75A at 0.5 °C, 11 on the LM75B at
//! 0.125 °C), `0x01` configuration (bit 0 shutdown), `0x02` T_hyst and `0x03` T_os (9 bits,
//! 0.5 °C). Bus addresses `0x48`–`0x4F`.

use embedded_hal::i2c::I2c;

const REG_TEMP: u8 = 0x00;
const REG_CONF: u8 = 0x01;
const REG_THYST: u8 = 0x02;
const REG_TOS: u8 = 0x03;
const CONF_SHUTDOWN: u8 = 0x01;

/// How many significant bits the part's temperature register has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// LM75A and the original LM75: 0.5 °C steps.
    Bits9,
    /// LM75B: 0.125 °C steps.
    Bits11,
}

/// Why the sensor could not be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Lm75Error<E> {
    /// The I²C bus reported an error (no acknowledge, arbitration loss, ...).
    #[error("I2C error talking to the LM75: {0:?}")]
    Bus(E),
    /// An address outside the LM75's `0x48`–`0x4F`.
    #[error("I2C address {0:#04x} is not an LM75 address (0x48-0x4f)")]
    BadAddress(u8),
    /// A threshold outside the part's -55..=125 °C range.
    #[error("threshold {0} m°C is outside the LM75's -55..=125 °C range")]
    ThresholdOutOfRange(i32),
}

/// One LM75 on a bus.
#[derive(Debug)]
pub struct Lm75<I> {
    i2c: I,
    address: u8,
    resolution: Resolution,
}

impl<I: I2c> Lm75<I> {
    /// A driver for the part at `address`.
    pub fn new(i2c: I, address: u8, resolution: Resolution) -> Result<Self, Lm75Error<I::Error>> {
        if !(0x48..=0x4F).contains(&address) {
            return Err(Lm75Error::BadAddress(address));
        }
        Ok(Lm75 {
            i2c,
            address,
            resolution,
        })
    }

    /// The temperature in thousandths of a degree Celsius.
    pub fn read_millicelsius(&mut self) -> Result<i32, Lm75Error<I::Error>> {
        let mut buf = [0u8; 2];
        self.i2c
            .write_read(self.address, &[REG_TEMP], &mut buf)
            .map_err(Lm75Error::Bus)?;
        let raw = i16::from_be_bytes(buf);
        Ok(match self.resolution {
            Resolution::Bits9 => i32::from(raw >> 7) * 500,
            Resolution::Bits11 => i32::from(raw >> 5) * 125,
        })
    }

    /// Puts the part into (or out of) its low-power shutdown mode, keeping the other
    /// configuration bits.
    pub fn set_shutdown(&mut self, shutdown: bool) -> Result<(), Lm75Error<I::Error>> {
        let conf = self.read_config()?;
        let new = if shutdown {
            conf | CONF_SHUTDOWN
        } else {
            conf & !CONF_SHUTDOWN
        };
        self.i2c
            .write(self.address, &[REG_CONF, new])
            .map_err(Lm75Error::Bus)
    }

    /// The configuration register.
    pub fn read_config(&mut self) -> Result<u8, Lm75Error<I::Error>> {
        let mut conf = [0u8; 1];
        self.i2c
            .write_read(self.address, &[REG_CONF], &mut conf)
            .map_err(Lm75Error::Bus)?;
        Ok(conf[0])
    }

    /// Sets the over-temperature output: asserted above `tos`, released below `thyst`
    /// (m°C, rounded down to the part's 0.5 °C steps).
    pub fn set_overtemperature(
        &mut self,
        tos_millicelsius: i32,
        thyst_millicelsius: i32,
    ) -> Result<(), Lm75Error<I::Error>> {
        for (reg, value) in [(REG_TOS, tos_millicelsius), (REG_THYST, thyst_millicelsius)] {
            if !(-55_000..=125_000).contains(&value) {
                return Err(Lm75Error::ThresholdOutOfRange(value));
            }
            let half_degrees = value.div_euclid(500) as i16;
            let [msb, lsb] = (half_degrees << 7).to_be_bytes();
            self.i2c
                .write(self.address, &[reg, msb, lsb])
                .map_err(Lm75Error::Bus)?;
        }
        Ok(())
    }

    /// Gives the bus back.
    pub fn release(self) -> I {
        self.i2c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::i2c::{Mock as I2cMock, Transaction};

    #[test]
    fn reads_an_lm75b_temperature_with_the_exact_transaction() {
        // 0x1920 = 0b0001_1001_0010_0000: 11-bit value 0xC9 = 201 → 25.125 °C.
        let bus = I2cMock::new(&[Transaction::write_read(0x48, vec![0x00], vec![0x19, 0x20])]);
        let mut s = Lm75::new(bus, 0x48, Resolution::Bits11).unwrap();
        assert_eq!(s.read_millicelsius().unwrap(), 25_125);
        s.release().done();
    }

    #[test]
    fn reads_negative_temperatures_in_both_resolutions() {
        // -25.0 °C: 9-bit 0x1CE (two's complement) = 0xE700 left-justified.
        let bus = I2cMock::new(&[
            Transaction::write_read(0x49, vec![0x00], vec![0xE7, 0x00]),
            Transaction::write_read(0x49, vec![0x00], vec![0xFF, 0xE0]),
        ]);
        let mut s = Lm75::new(bus, 0x49, Resolution::Bits9).unwrap();
        assert_eq!(s.read_millicelsius().unwrap(), -25_000);
        // 0xFFE0 as 9-bit is -1 LSB = -0.5 °C.
        assert_eq!(s.read_millicelsius().unwrap(), -500);
        s.release().done();
    }

    #[test]
    fn shutdown_keeps_the_other_configuration_bits() {
        let bus = I2cMock::new(&[
            Transaction::write_read(0x48, vec![0x01], vec![0b0001_0010]),
            Transaction::write(0x48, vec![0x01, 0b0001_0011]),
            Transaction::write_read(0x48, vec![0x01], vec![0b0001_0011]),
            Transaction::write(0x48, vec![0x01, 0b0001_0010]),
        ]);
        let mut s = Lm75::new(bus, 0x48, Resolution::Bits11).unwrap();
        s.set_shutdown(true).unwrap();
        s.set_shutdown(false).unwrap();
        s.release().done();
    }

    #[test]
    fn overtemperature_thresholds_are_written_in_half_degrees() {
        // 80 °C = 160 half-degrees = 0x5000; 75 °C = 150 = 0x4B00.
        let bus = I2cMock::new(&[
            Transaction::write(0x48, vec![0x03, 0x50, 0x00]),
            Transaction::write(0x48, vec![0x02, 0x4B, 0x00]),
        ]);
        let mut s = Lm75::new(bus, 0x48, Resolution::Bits11).unwrap();
        s.set_overtemperature(80_000, 75_000).unwrap();
        assert_eq!(
            s.set_overtemperature(130_000, 75_000),
            Err(Lm75Error::ThresholdOutOfRange(130_000))
        );
        s.release().done();
    }

    #[test]
    fn refuses_addresses_outside_the_lm75_range() {
        let bus = I2cMock::new(&[]);
        let err = Lm75::new(bus.clone(), 0x50, Resolution::Bits9).unwrap_err();
        assert_eq!(err, Lm75Error::BadAddress(0x50));
        bus.clone().done();
    }

    #[test]
    fn a_bus_error_is_reported_not_turned_into_a_temperature() {
        use embedded_hal::i2c::ErrorKind;
        let bus = I2cMock::new(&[
            Transaction::write_read(0x48, vec![0x00], vec![0, 0]).with_error(ErrorKind::Other)
        ]);
        let mut s = Lm75::new(bus, 0x48, Resolution::Bits11).unwrap();
        assert_eq!(s.read_millicelsius(), Err(Lm75Error::Bus(ErrorKind::Other)));
        s.release().done();
    }
}
